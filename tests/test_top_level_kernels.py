"""The repository's kernels/ folder is hybrids.kernels; imported as the top-level "kernels" (the
repository's root on sys.path, as under `python -m pytest` or a notebook started there) it hands
the import over to PyPI's package of that name, which transformers imports."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from helpers import ROOT


def _import_kernels_from_the_root() -> subprocess.CompletedProcess:
    code = "import sys; sys.path.insert(0, '.'); import kernels; print(kernels.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_top_level_import_gets_the_pypi_package_or_a_clear_error():
    result = _import_kernels_from_the_root()
    try:
        importlib.metadata.distribution("kernels")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    if installed:  # transformers depends on it: the test extra installs it
        assert result.returncode == 0, result.stderr[-2000:]
        answered = result.stdout.strip()
        assert answered != str(ROOT / "kernels" / "__init__.py") and "site-packages" in answered, answered
    else:
        assert result.returncode != 0 and "its kernels/ folder is hybrids.kernels" in result.stderr


def test_transformers_imports_its_kernels_integration_from_the_repository_root():
    # transformers' hub_kernels is the module that does `from kernels import ...` on import.
    code = "import sys; sys.path.insert(0, '.'); import transformers.integrations.hub_kernels; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
