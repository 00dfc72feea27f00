import os
import sys

import pytest
import torch

# Lightning and the notebook should never try the network or a GPU in tests.
os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_TIPS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from an empty folder, so that CLI runs write their logs there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hybrids"])  # LightningCLI(args=...) warns about pytest's argv
    return tmp_path


def pytest_addoption(parser):
    parser.addoption(
        "--kernel-matrix", choices=("smoke", "full"), default="smoke",
        help="tests/kernels/test_triton_compile.py: compile every Triton kernel branch once (smoke, the "
             "default) or every dtype, tile and shape of hybrids.kernels.gpu_report.cases() (full; CI runs it)",
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
