"""The house rules of DESIGN.md: each layer imports only from the layers below it."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"

# Layer of each module of ours, bottom (0) to top. A module may import from its layer and below.
LAYERS = {
    "hybrids.kernels": 0,
    "hybrids.errors": 0,
    "hybrids.mixers": 1,
    "hybrids.blocks": 2,
    "hybrids.reversible": 2,  # reversible couplings of the blocks, under model
    "hybrids.segments": 2,  # carrying mixer states across segments, under model
    "hybrids.spec": 2,
    "hybrids.config": 2,
    "hybrids.sampling": 2,
    "hybrids.model": 2,
    "hybrids.lit": 3,
    "hybrids.long_context": 3,  # chunked evaluation, under lit; reads the label convention of data
    "hybrids.data": 3,
    "hybrids.checkpoints": 3,
    "hybrids.callbacks": 3,
    "hybrids.identity": 4,
    "hybrids.cli": 4,
    "hybrids.generation_cli": 4,
    "hybrids.analysis": 4,
    "hybrids.sweeps": 4,
    "hybrids.__main__": 4,
    "hybrids": 4,  # the package's lazy __init__
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module} has no layer in tests/test_layering.py: add it")


def our_modules():
    for path in sorted((ROOT / "hybrids").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        yield name, path
    for path in sorted(KERNELS.rglob("*.py")):
        name = "hybrids.kernels." + ".".join(path.relative_to(KERNELS).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def imports_of(path: Path, module: str):
    """Absolute names of what ``module`` (at ``path``) imports; relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..pkg import y
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                yield from (f"{target}.{a.name}" for a in node.names) if not node.module else [target]
            elif node.module:
                yield node.module


def test_each_layer_imports_only_from_below():
    for module, path in our_modules():
        own = layer_of(module)
        for imported in imports_of(path, module):
            if imported.startswith("hybrids"):
                assert layer_of(imported) <= own, f"{module} (layer {own}) imports {imported}"


def test_kernels_and_mixers_do_not_import_lightning():
    for module, path in our_modules():
        if layer_of(module) <= 2:
            for imported in imports_of(path, module):
                assert not imported.startswith(("lightning", "pytorch_lightning")), f"{module} imports {imported}"


def test_importing_kernels_does_not_load_lightning():
    code = "import sys, hybrids.kernels; print('lightning' in sys.modules, 'hybrids.lit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_kernels_install_as_hybrids_kernels():
    import hybrids.kernels

    assert Path(hybrids.kernels.__file__).resolve().parent == KERNELS


def test_every_package_is_listed_in_pyproject():
    """The wheel holds only the packages pyproject names: a new sub-package must be added there."""
    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    listed = set(re.findall(r'"([\w.]+)"', block))
    found = {name for name, path in our_modules() if path.name == "__init__.py"}
    assert found == listed, f"missing from pyproject.toml: {found - listed}; listed but absent: {listed - found}"


def test_relative_imports_are_resolved(tmp_path):
    """The checker must see relative imports too (a `from ..lit import x` in a mixer would
    otherwise slip through)."""
    module = tmp_path / "mixers" / "bad.py"
    module.parent.mkdir()
    module.write_text("from ..lit import LanguageModel\nfrom . import base\nfrom .attention import Attention\n")
    assert list(imports_of(module, "hybrids.mixers.bad")) == [
        "hybrids.lit", "hybrids.mixers.base", "hybrids.mixers.attention"
    ]
    assert layer_of("hybrids.lit") > layer_of("hybrids.mixers.bad")
