"""The house rules of DESIGN.md: kernels stay pure, and importing them stays light."""

import ast
import subprocess
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def test_kernels_import_nothing_above_them():
    for path in KERNELS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("lightning", "pytorch_lightning")), f"{path.name} imports {name}"
                if name.startswith("hybrids"):
                    assert name.startswith("hybrids.kernels"), f"{path.name} imports {name}"


def test_importing_kernels_does_not_load_lightning():
    code = "import sys, hybrids.kernels; print('lightning' in sys.modules, 'hybrids.lit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_kernels_install_as_hybrids_kernels():
    import hybrids.kernels

    assert Path(hybrids.kernels.__file__).resolve().parent == KERNELS
