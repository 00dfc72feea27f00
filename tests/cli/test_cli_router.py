"""The ``hybrids`` router: every command in its help, answered without loading Lightning;
unknown commands refused with a suggestion."""

import subprocess
import sys

from hybrids.cli import COMMANDS


def run(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from hybrids.cli import main; sys.argv = ['hybrids', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('LIGHTNING' if 'lightning' in sys.modules else 'LIGHT'); sys.exit(code)"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_help_lists_every_command_without_loading_lightning():
    result = run("--help")
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "predict", "generate", "sweep", "plot", "convert"):
        assert f"  {command} " in result.stdout
    assert set(COMMANDS) == {"fit", "validate", "test", "predict", "generate", "sweep", "plot", "convert"}
    assert result.stdout.strip().endswith("LIGHT")


def test_no_command_prints_the_usage_and_exits_2():
    result = run()
    assert result.returncode == 2 and "usage: hybrids COMMAND" in result.stdout


def test_an_unknown_command_is_refused_with_a_suggestion():
    result = run("fitt", "-c", "x.yaml")
    assert result.returncode == 2
    assert "unknown command 'fitt'; did you mean 'fit'?" in result.stderr
    result = run("--config", "x.yaml")
    assert result.returncode == 2 and "the first argument is the command" in result.stderr


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("hybrids 0.")
