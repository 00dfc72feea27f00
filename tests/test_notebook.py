"""The analysis notebook runs top to bottom on the logs of a tiny real run."""

import base64
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from hybrids.analysis import load_runs, runs_table
from hybrids.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "state_size_vs_accuracy.ipynb"


def tiny_runs(tmp: Path) -> Path:
    for d_model in (16, 32):
        build_cli([
            "fit", "-c", str(ROOT / "configs" / "transformer.yaml"),
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.max_epochs=1", f"--model.init_args.d_model={d_model}",
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


def test_notebook_executes(in_tmp, monkeypatch):
    runs_dir = tiny_runs(in_tmp)
    monkeypatch.setenv("HYBRIDS_RUNS", str(runs_dir))
    kernel = kernel_of_this_python(in_tmp, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    # (nbclient has already raised if a cell failed.) The table the notebook prints must hold
    # each run's figures as load_runs reads them, and the plot must be a real PNG.
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    lines = "".join(o.get("text", "") for o in outputs).splitlines()
    runs = load_runs(runs_dir)
    assert len(runs) == 2
    for run in runs:
        row = next((line.split() for line in lines if line.startswith(run.name)), None)
        assert row is not None, f"{run.name} missing from the notebook's table"
        assert row[1:] == [run.family, str(run.seq_len), f"{run.state_size:,}", f"{run.params:,}", f"{run.accuracy:.4f}"]
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and images[0].startswith(b"\x89PNG\r\n\x1a\n") and len(images[0]) > 5000
