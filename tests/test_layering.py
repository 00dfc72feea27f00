"""The architecture's layering and packaging: the import-linter contracts in pyproject.toml hold,
the kernels never load Lightning, and every package is installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from helpers import ROOT

KERNELS = ROOT / "kernels"


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run import-linter's ``lint-imports`` (installed beside this interpreter)."""
    executable = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(executable), *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_the_layering_contracts_hold():
    """pyproject.toml's contracts: cli > lab > train > data | model > mixers > parts > kernels >
    errors, each importing only from below (relative imports included), and no Lightning below
    the training loop."""
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_a_layers_contract(tmp_path):
    """The checker itself: a package whose lower layer imports its upper one (relatively) fails."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "high.py").write_text("from . import low\n")
    (package / "low.py").write_text("from .high import x\n")
    (tmp_path / "contracts.toml").write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["layered"]
        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        layers = ["layered.high", "layered.low"]
    """))
    result = lint_imports(str(tmp_path / "contracts.toml"), cwd=tmp_path)
    assert result.returncode != 0 and "layered.low -> layered.high" in result.stdout, result.stdout[-2000:]


def test_importing_kernels_does_not_load_lightning():
    code = "import sys, hybrids.kernels; print('lightning' in sys.modules, 'hybrids.train.module' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_kernels_install_as_hybrids_kernels():
    import hybrids.kernels

    assert Path(hybrids.kernels.__file__).resolve().parent == KERNELS
    assert (ROOT / "hybrids" / "kernels").resolve() == KERNELS  # the link the packaging follows


def test_every_package_is_installed():
    """setuptools' discovery (pyproject's ``packages.find``) finds every folder with an
    ``__init__.py`` under hybrids/, the kernels' sub-packages through the link: a new package
    cannot be left out of a wheel."""
    from setuptools import find_packages

    found = set(find_packages(where=str(ROOT), include=["hybrids", "hybrids.*"]))
    folders = set()
    for folder, _, files in os.walk(ROOT / "hybrids", followlinks=True):
        if "__init__.py" in files and "__pycache__" not in folder:
            folders.add(".".join(Path(folder).relative_to(ROOT).parts))
    assert folders == found, f"not found: {folders - found}; extra: {found - folders}"
    kernel_packages = {p.parent.relative_to(KERNELS).parts for p in KERNELS.rglob("__init__.py")}
    assert {".".join(("hybrids", "kernels", *parts)) for parts in kernel_packages} <= found


def test_training_installs_only_what_training_needs():
    """`make demo` installs the base dependencies alone: none of the test, notebook, cluster or
    GPU packages (Triton alone is a 1 GB install that CPU training never uses)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pip's copy of the same parser
        from pip._vendor import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
            for dep in project["dependencies"]}
    assert {"torch", "lightning", "jsonargparse", "einops"} <= base
    extras_only = {"pytest", "pytest-xdist", "ray", "faiss-cpu", "jupyterlab", "nbclient", "ipykernel", "triton",
                   "mamba-ssm", "causal-conv1d", "mkdocs", "import-linter"}
    assert not base & extras_only, base & extras_only
    makefile = (ROOT / "Makefile").read_text()
    assert "bootstrap.sh \"\"" in makefile.split("setup:")[1].split("\n\n")[0], "make demo's setup installs extras"
