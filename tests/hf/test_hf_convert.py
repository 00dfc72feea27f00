"""``hybrids convert --from_hf DIR --out OUT``: a tiny transformers Mamba with a tokenizer becomes
a config and checkpoint that ``hybrids generate --prompt`` and ``hybrids test`` use; the text
generated equals transformers' greedy continuation."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from hybrids.cli.convert import convert_main
from hybrids.cli.generate import generate_main
from hf_parity import save_perturbed

WORDS = "the quick brown fox jumps over a lazy dog while def class return import".split()


@pytest.fixture
def hf_folder(tmp_path):
    folder = tmp_path / "tiny-mamba"
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=24, hidden_size=16, state_size=4, num_hidden_layers=2,
                                      time_step_rank=2, eos_token_id=1, pad_token_id=0, bos_token_id=1)
    save_perturbed(transformers.MambaForCausalLM(config), folder)
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer.save(str(folder / "tokenizer.json"))  # 16 tokens: the model's 24 are padded
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in range(40):
        (corpus / f"doc{d:02d}.txt").write_text(" ".join(WORDS[(d + 5 * i) % len(WORDS)] for i in range(60)))
    return folder, corpus


def test_convert_then_generate_text_as_transformers_does(hf_folder, tmp_path, capsys, monkeypatch):
    folder, corpus = hf_folder
    out = tmp_path / "converted"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hybrids"])
    assert convert_main(["--from_hf", str(folder), "--out", str(out), "--data_path", str(corpus), "--seq_len", "16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.ckpt"]
    assert convert_main(["--from_hf", str(folder), "--out", str(out)]) == 2  # never over a conversion
    assert "error: out:" in capsys.readouterr().err
    prompt = "the quick brown fox"
    capsys.readouterr()
    generate_main(["-c", str(out / "config.yaml"), "--ckpt_path", str(out / "model.ckpt"), "--prompt", prompt,
                   "--max_new_tokens", "8"])
    printed = capsys.readouterr().out.strip()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    theirs = transformers.MambaForCausalLM.from_pretrained(folder).eval()
    theirs.generation_config.eos_token_id = None
    expected = theirs.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0)
    new = [t for t in expected[0, ids.shape[1]:].tolist() if t < tokenizer.get_vocab_size()]
    assert printed == tokenizer.decode(new, skip_special_tokens=False)
    # test evaluates it, and fit fine-tunes from its weights (the checkpoint is the config's run).
    from hybrids.cli.fit import build_cli

    build_cli(["test", "-c", str(out / "config.yaml"), "--ckpt_path", str(out / "model.ckpt"),
               "--trainer.enable_progress_bar=false"])
    build_cli(["fit", "-c", str(out / "config.yaml"), "--ckpt_path", str(out / "model.ckpt"), "--load_weights_only=true",
               "--trainer.max_steps=2", "--trainer.max_epochs=null", "--trainer.limit_val_batches=1",
               "--trainer.enable_progress_bar=false", "--test_after_fit=false"])
    assert list((tmp_path / "runs").rglob("last.ckpt"))


def test_refusals_write_nothing(hf_folder, tmp_path, capsys):
    folder, _ = hf_folder
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    out = tmp_path / "nothing"
    assert convert_main(["--from_hf", str(folder), "--out", str(out)]) == 2
    assert "error: from_hf: hidden_act: 'relu'" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").unlink()
    assert convert_main(["--from_hf", str(folder), "--out", str(out)]) == 2
    assert "error: tokenizer:" in capsys.readouterr().err and (not out.exists() or not any(out.iterdir()))


def test_a_converted_run_exports_back_to_transformers(hf_folder, tmp_path, capsys, monkeypatch):
    folder, corpus = hf_folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hybrids"])
    run = tmp_path / "converted"
    assert convert_main(["--from_hf", str(folder), "--out", str(run), "--data_path", str(corpus)]) == 0
    exported = tmp_path / "exported"
    assert convert_main(["--to_hf", "-c", str(run / "config.yaml"), "--ckpt_path", str(run / "model.ckpt"),
                         "--out", str(exported)]) == 0
    original = transformers.MambaForCausalLM.from_pretrained(folder).eval()
    back = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    tokens = torch.randint(0, 24, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, original(tokens).logits)
    # A stack no transformers architecture expresses: one keyed line, nothing read or written.
    from helpers import ROOT

    capsys.readouterr()
    assert convert_main(["--to_hf", "-c", str(ROOT / "configs" / "transformer.yaml"), "--ckpt_path",
                         str(run / "model.ckpt"), "--out", str(tmp_path / "refused")]) == 2
    assert "error: to_hf: mixers: ['hybrids.mixers.Attention']" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
