"""Mixer settings the CLI reports as one keyed line before training (issue 26): a faiss search
asked for where faiss is not installed used to give three tracebacks and jsonargparse's "Union
subtypes" wall (an ImportError passes through the mixer-spec builder, which keys ValueErrors)."""

from __future__ import annotations

import sys

import pytest

from hybrids.cli.fit import build_cli
from helpers import ROOT

MEMORIZING = ROOT / "configs" / "bytes" / "memorizing.yaml"
# configs/bytes/memorizing.yaml's mixers, its memorizing layer X asking for the faiss search (a
# mixer spec cannot be patched key by key on the command line: the whole mapping is given).
FAISS_MIXERS = (
    "--model.init_args.stack.mixers={A: {class_path: hybrids.mixers.Attention, init_args: {heads: 4}}, "
    "X: {class_path: hybrids.mixers.MemorizingAttention, init_args: {heads: 4, segment_length: 128, "
    "memory_size: 1024, top_k: 32, search: faiss}}}"
)


def test_faiss_search_without_faiss_is_one_keyed_line(in_tmp, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", str(MEMORIZING), FAISS_MIXERS])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Union" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "error: model.init_args.stack.mixers.X.init_args.search: 'faiss' needs the faiss package, which is not "
        "installed: pip install -e '.[faiss]'"
    )


def test_a_segment_length_that_does_not_divide_the_data_s_seq_len_is_refused_before_training(in_tmp, capsys):
    """configs/bytes/memorizing.yaml feeds 128-token segments; a memorizing layer cutting them in
    96s would fail at the first validation batch: the CLI asks the mixer where model and data meet."""
    mixers = FAISS_MIXERS.replace("segment_length: 128", "segment_length: 96").replace("search: faiss", "search: torch")
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", str(MEMORIZING), mixers])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: model.init_args.stack.mixers.X.init_args.segment_length: 96 does not divide the data's seq_len (128)" in err
    assert not (in_tmp / "runs").exists()
