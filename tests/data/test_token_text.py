"""Text tokenized by a local tokenizer.json (hybrids.data.TokenizedText): a tokenizer trained in
the test, the chunks and their labels, the vocabulary rules, and fit then generate from the CLI
with text prompts."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from hybrids.data import IGNORE_INDEX, TokenizedText
from hybrids.errors import ConfigError

WORDS = "the quick brown fox jumps over a lazy dog while def class return import".split()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A corpus of 60 small documents and a word-level tokenizer for it, with an end-of-text
    token named in tokenizer_config.json."""
    root = tmp_path_factory.mktemp("tokens")
    corpus = root / "corpus"
    corpus.mkdir()
    for d in range(60):
        (corpus / f"doc{d:02d}.txt").write_text(" ".join(WORDS[(d + 3 * i) % len(WORDS)] for i in range(40)))
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    return root


def test_chunks_boundaries_and_text(folder):
    data = TokenizedText(str(folder), path=str(folder / "corpus"), seq_len=12, batch_size=4)
    data.setup()
    eos = data.encode("<eos>")[0]
    assert data.boundary == eos == 1 and data.vocab_size == len(WORDS) + 2
    inputs, labels = data.sets["train"][0]
    assert inputs.shape == labels.shape == (12,) and inputs[0] == eos  # a document starts the stream
    window = data.sets["train"].stream[: 13]
    assert torch.equal(inputs, window[:-1]) and torch.equal(labels[labels != IGNORE_INDEX], window[1:][window[1:] != eos])
    assert data.decode(data.encode("the lazy dog")) == "the lazy dog"
    assert sum(len(data.sets[s].stream) for s in ("train", "val", "test")) == 60 * 41  # 40 words + a boundary each


def test_vocabulary_and_boundary_rules(folder):
    padded = TokenizedText(str(folder / "tokenizer.json"), path=str(folder / "corpus"), vocab_size=32)
    assert padded.vocab_size == 32 and padded.decode([2, 31]) == padded.decode([2])  # past the tokenizer: dropped
    with pytest.raises(ConfigError, match="vocab_size"):
        TokenizedText(str(folder), path=str(folder / "corpus"), vocab_size=3)
    with pytest.raises(ConfigError, match="boundary_token"):
        TokenizedText(str(folder), path=str(folder / "corpus"), boundary_token=99)
    with pytest.raises(ConfigError, match="tokenizer.json"):
        TokenizedText(str(folder / "corpus"))
    with pytest.raises(ConfigError, match="seq_len"):
        TokenizedText(str(folder), path=str(folder / "corpus"), seq_len=5000).setup()


def test_fit_then_generate_from_text(folder, monkeypatch, capsys):
    from hybrids.cli.fit import build_cli
    from hybrids.cli.generate import generate_main

    config = folder / "run.yaml"
    config.write_text(json.dumps({
        "model": {"class_path": "hybrids.LanguageModel", "init_args": {"stack": {"d_model": 16, "n_layers": 1, "mlp_expand": 0}}},
        "data": {"class_path": "hybrids.data.TokenizedText",
                 "init_args": {"tokenizer": str(folder), "path": str(folder / "corpus"), "seq_len": 16, "batch_size": 4}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                              "init_args": {"save_dir": str(folder / "runs")}}},
    }))
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["hybrids"])
    build_cli(["fit", "-c", str(config), "--test_after_fit=false"])
    checkpoint = next(folder.rglob("last.ckpt"))
    capsys.readouterr()
    generate_main(["-c", str(config), "--ckpt_path", str(checkpoint), "--prompt", "the quick brown", "--max_new_tokens", "5"])
    printed = capsys.readouterr().out.strip().split()
    assert len(printed) == 5 and set(printed) <= set(WORDS) | {"<unk>", "<eos>"}
    assert os.path.isfile(checkpoint)
