"""load_runs reads the logs of a tiny real run; the analysis notebooks run top to bottom on
synthetic sweep folders, and as they ship (no HYBRIDS_SWEEP: the real CPU sweeps where they exist,
else the tiny demonstration sweeps committed in notebooks/demo_runs)."""

import base64
import json
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from test_sweep_analysis import write_run

from hybrids.lab.analysis import accuracy_by_length, load_runs, runs_table, select_points, sweep_table, sweep_tables
from hybrids.cli.fit import build_cli
from helpers import ROOT

NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = NOTEBOOKS / "state_size_vs_accuracy.ipynb"
LENGTH_NOTEBOOK = NOTEBOOKS / "length_extrapolation.ipynb"
DEMO_RUNS = NOTEBOOKS / "demo_runs"


def tiny_runs(tmp: Path) -> Path:
    for d_model in (16, 32):
        build_cli([
            "fit", "-c", str(ROOT / "configs" / "transformer.yaml"),
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.max_epochs=1", f"--model.init_args.stack.d_model={d_model}",
            "--data.init_args.num_train_examples=32", "--data.init_args.num_test_examples=16",
            "--data.init_args.batch_size=16",
        ])
    return tmp / "runs"


def test_load_runs_reads_fit_figures(in_tmp):
    runs = load_runs(tiny_runs(in_tmp))
    assert [r.state_size for r in runs] == [2 * 2 * 16 * 64, 2 * 2 * 32 * 64]
    assert all(r.family == "Attention" and r.seq_len == 64 and 0 <= r.accuracy <= 1 for r in runs)
    assert "Attention" in runs_table(runs)


def kernel_of_this_python(tmp: Path, monkeypatch) -> str:
    """A kernelspec that runs this interpreter (the venv's), found first through JUPYTER_PATH.

    A user-level "python3" kernel would otherwise win and run the notebook outside the venv.
    """
    spec = tmp / "jupyter" / "kernels" / "hybrids-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "hybrids", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
    return "hybrids-test"


def synthetic_sweep(root: Path) -> Path:
    """Two families x two widths x two learning rates x two seeds, and one failed run."""
    for family, mixers in (("mamba", "Mamba"), ("attn", "Attention")):
        for d_model in (32, 64):
            for lr in (1e-3, 1e-2):
                for seed in (0, 1):
                    val = 0.4 + d_model / 200 + (lr == 1e-2) * 0.05 + seed / 100
                    write_run(root, family=family, mixers=mixers, d_model=d_model, lr=lr, seed=seed,
                              val=val, test=val - 0.03)
    write_run(root, family="attn", mixers="Attention", d_model=32, lr=1e-3, seed=2, status="failed")
    return root


def test_notebook_executes(tmp_path, monkeypatch):
    sweep_dir = synthetic_sweep(tmp_path / "sweep")
    monkeypatch.setenv("HYBRIDS_SWEEP", str(sweep_dir))
    kernel = kernel_of_this_python(tmp_path, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    # (nbclient has already raised if a cell failed.) The table the notebook prints must hold
    # each selected point's figures as select_points computes them, and both plots must be real PNGs.
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    lines = "".join(o.get("text", "") for o in outputs).splitlines()
    points = select_points(sweep_table(sweep_dir))
    assert len(points) == 4 and set(points["lr"]) == {1e-2}
    for _, p in points.iterrows():
        row = next((line.split() for line in lines if line.split()[:4] == [p.family, "64", "4", str(p.d_model)]), None)
        assert row is not None, f"{p.family} d_model {p.d_model} missing from the notebook's table"
        assert row[4:9] == [f"{p.state_size:,}", f"{p.params:,}", "0.01", f"{p.test_acc_mean:.4f}", "±"]
        assert row[9:12] == [f"{p.test_acc_sem:.4f}", f"[{p.test_acc_min:.4f},", f"{p.test_acc_max:.4f}]"]
        assert row[12] == "2"
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 5000 for image in images)


def test_length_extrapolation_notebook_executes(tmp_path, monkeypatch):
    from hybrids.lab.analysis import accuracy_by_length

    sweep_dir = tmp_path / "induction"
    for family, mixers, falls in (("mamba", "Mamba", 0.0), ("attn", "Attention", 0.3)):
        for lr in (1e-3, 1e-2):
            for seed in (0, 1):
                acc = {f"test/acc@{length}": max(0.0, 1.0 - falls * i - seed / 100)
                       for i, length in enumerate((256, 512, 1024))}
                write_run(sweep_dir, family=family, mixers=mixers, lr=lr, seed=seed, seq_len=256, kv=None,
                          val=0.9 + (lr == 1e-3) / 20, test=acc["test/acc@256"], extra_metrics=acc)
    monkeypatch.setenv("HYBRIDS_SWEEP", str(sweep_dir))
    kernel = kernel_of_this_python(tmp_path, monkeypatch)
    notebook = ROOT / "notebooks" / "length_extrapolation.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(notebook.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    lines = [line.split() for line in "".join(o.get("text", "") for o in outputs).splitlines()]
    expected = accuracy_by_length(sweep_table(sweep_dir))
    assert len(expected) == 6 and set(expected["lr"]) == {1e-3}
    for _, row in expected.iterrows():
        printed = next((line for line in lines if line[:1] == [row.family] and str(row.length) in line), None)
        assert printed is not None, f"{row.family} at {row.length} missing from the notebook's table"
        assert f"{row.acc_mean:.4g}" in printed
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and images[0].startswith(b"\x89PNG\r\n\x1a\n") and len(images[0]) > 5000


def execute(notebook: Path, kernel: str) -> tuple[list[str], list[bytes]]:
    """Run a notebook top to bottom from its own folder (as Jupyter does); its printed lines and
    its PNG images. nbclient raises if a cell fails."""
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(notebook.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    lines = "".join(o.get("text", "") for o in outputs).splitlines()
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    return lines, images


def shown_by_default(real: list[str], demo: str) -> tuple[list[str], bool]:
    """The folders (relative to notebooks/) a notebook reads with HYBRIDS_SWEEP unset, and whether
    that is its demonstration sweep: the real sweeps that exist, else the demo (a fresh clone)."""
    existing = [d for d in real if (NOTEBOOKS / d).is_dir()]
    return (existing, False) if existing else ([demo], True)


def test_notebooks_run_as_they_ship(tmp_path, monkeypatch):
    monkeypatch.delenv("HYBRIDS_SWEEP", raising=False)
    kernel = kernel_of_this_python(tmp_path, monkeypatch)

    # Accuracy against width and state size.
    folders, demo = shown_by_default(["../runs/sweeps/mqar_cpu", "../runs/sweeps/mqar_cpu_linear"], "demo_runs/notebook_mqar")
    lines, images = execute(NOTEBOOK, kernel)
    runs = sweep_tables([NOTEBOOKS / d for d in folders])
    points = select_points(runs)
    done = int((runs["status"] == "done").sum())
    assert lines[0].startswith(", ".join(folders))
    assert ("tiny-budget demonstration sweep" in lines[0]) == demo
    assert lines[0].endswith(f": {len(runs)} runs, {done} done, {len(points)} points")
    if demo:
        assert len(runs) == done == 12 and len(points) == 6
        assert set(points["family"]) == {"attention", "mamba", "gla"} and set(points["d_model"]) == {32, 64}
    for _, p in points.iterrows():
        key = [p.family, f"{int(p.seq_len)}", f"{int(p.num_kv_pairs)}", f"{int(p.d_model)}"]
        row = next((re.split(r"\s{2,}", line.strip()) for line in lines if line.split()[:4] == key), None)
        assert row is not None, f"{key} missing from the notebook's table"
        assert f"{p.state_size:,}" in row and row[-2:] == [f"{int(p.n_seeds)}", p.learning]
        assert row[-4].startswith(f"{p.test_acc_mean:.4f} ± ")
        if demo:  # the demonstration runs were validated often enough to tell
            assert p.learning != "-" and "too short" not in p.learning
    assert len(images) == 2
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 5000 for image in images)

    # Accuracy against evaluation length.
    folders, demo = shown_by_default(["../runs/sweeps/induction_cpu"], "demo_runs/notebook_induction")
    lines, images = execute(LENGTH_NOTEBOOK, kernel)
    runs = sweep_tables([NOTEBOOKS / d for d in folders])
    expected = accuracy_by_length(runs)
    done = int((runs["status"] == "done").sum())
    assert lines[0].startswith(", ".join(folders))
    assert ("tiny-budget demonstration sweep" in lines[0]) == demo
    assert lines[0].endswith(f": {len(runs)} runs, {done} done")
    if demo:  # trained at 32, tested up to 1,024
        assert len(runs) == done == 12
        assert set(expected["family"]) == {"attention", "mamba", "gla"}
        assert set(expected["length"]) == {32, 64, 128, 256, 512, 1024}
    for _, row in expected.iterrows():
        printed = next((line.split() for line in lines
                        if line.split()[:2] == [row.family, f"{int(row.d_model)}"] and line.split()[5:6] == [f"{row.length}"]),
                       None)
        assert printed is not None, f"{row.family} {row.d_model} at {row.length} missing from the notebook's table"
        assert printed[6] == f"{row.acc_mean:.4g}"
    assert len(images) == 1 and images[0].startswith(b"\x89PNG\r\n\x1a\n") and len(images[0]) > 5000


def test_demo_runs_are_committable():
    """The demonstration sweeps hold finished runs and what the analysis reads, no checkpoints,
    and stay small."""
    assert (DEMO_RUNS / "README.md").is_file()
    files = [f for f in DEMO_RUNS.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    assert not [f for f in files if f.suffix == ".ckpt" or f.name == ".lock"]
    for name in ("notebook_mqar", "notebook_induction"):
        sweep = DEMO_RUNS / name
        listed = json.loads((sweep / "manifest.json").read_text())["runs"]
        assert sorted(listed) == sorted(d.name for d in sweep.iterdir() if d.is_dir())
        for run in listed:
            status = json.loads((sweep / run / "status.json").read_text())
            assert status["status"] == "done" and status["sweep"] == name
            assert (sweep / run / status["log_dir"] / "metrics.csv").is_file()
            assert (sweep / run / status["log_dir"] / "hparams.yaml").is_file()
