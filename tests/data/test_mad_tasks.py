"""MAD's data modules (what each set holds) and the auto-encoder readout that compression needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybrids.cli.fit import build_cli
from hybrids.data import (
    Compression,
    FuzzyInContextRecall,
    InContextRecall,
    MADSelectiveCopying,
    Memorization,
    NoisyInContextRecall,
)
from hybrids.data.mad import fuzzy_in_context_recall, in_context_recall
from hybrids.model.hybrid_lm import HybridLM
from hybrids.model.readout import sinusoidal_positions
from hybrids.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "mad" / "compression.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_recall_trains_on_every_next_token_and_is_scored_on_the_queries():
    task = InContextRecall(seq_len=32, num_train_examples=64, num_val_examples=16, num_test_examples=16, seed=3)
    task.setup()
    train_inputs, train_labels = task.train_set.tensors
    assert torch.equal(train_labels[:, :-1], train_inputs[:, 1:])
    assert torch.equal(torch.stack(task.val_set.tensors), torch.stack(in_context_recall(16, 32, 16, seed=5)))
    assert torch.equal(torch.stack(task.test_set.tensors), torch.stack(in_context_recall(16, 32, 16, seed=4)))
    scored = InContextRecall(seq_len=32, num_train_examples=64, train_labels="scored", seed=3)
    scored.setup("fit")
    assert torch.equal(torch.stack(scored.train_set.tensors), torch.stack(in_context_recall(64, 32, 16, seed=3)))
    noisy = NoisyInContextRecall(num_train_examples=8, num_val_examples=8, num_test_examples=8)
    assert (noisy.hparams.vocab_size, noisy.hparams.noise_vocab_size, noisy.hparams.frac_noise) == (32, 16, 0.2)


def test_fuzzy_recall_is_evaluated_on_keys_of_the_longest_motif():
    task = FuzzyInContextRecall(seq_len=48, num_train_examples=8, num_val_examples=8, num_test_examples=8)
    task.setup()
    want = fuzzy_in_context_recall(8, 48, 16, fixed_key_size=True, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(task.val_set.tensors, want))
    train = fuzzy_in_context_recall(8, 48, 16, fixed_key_size=False, seed=0, labels="all")
    assert all(torch.equal(a, b) for a, b in zip(task.train_set.tensors, train))


def test_memorization_sets_ask_the_same_facts():
    task = Memorization(vocab_size=64, num_train_examples=64, num_val_examples=64, num_test_examples=64)
    task.setup()
    facts: dict[int, int] = {}
    for dataset in (task.train_set, task.val_set, task.test_set):
        inputs, labels = dataset.tensors
        for key, value in zip(inputs[:, 0::2].flatten().tolist(), labels[:, 1::2].flatten().tolist()):
            assert facts.setdefault(key, value) == value
    assert len(facts) > 20
    other = Memorization(vocab_size=64, num_train_examples=64, seed=1)
    other.setup("fit")
    assert not torch.equal(other.train_set.tensors[1], task.train_set.tensors[1])


@pytest.mark.parametrize("task", [InContextRecall, NoisyInContextRecall, FuzzyInContextRecall, MADSelectiveCopying,
                                  Compression, Memorization], ids=lambda t: t.__name__)
def test_mad_tasks_count_as_solved_at_mads_threshold(task):
    assert task.criterion.threshold == 0.999
    assert getattr(task, "readout", "tokens") == ("last" if task is Compression else "tokens")


def test_the_last_position_readout_decodes_every_position_from_the_code():
    torch.manual_seed(0)
    model = HybridLM(12, d_model=16, readout="last")
    lm = HybridLM(12, d_model=16)
    lm.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")})
    tokens = torch.randint(0, 12, (3, 9))
    code = lm.features(tokens)[:, -1]  # the stack's normalised last hidden state
    z = code[:, None] + sinusoidal_positions(9, 16, code.dtype, code.device)
    d = model.decoder
    z = torch.nn.functional.gelu(d.fc1(d.norm1(z)))
    z = torch.nn.functional.gelu(d.fc2(d.norm2(z)))
    torch.testing.assert_close(model.features(tokens), d.norm3(z))
    p = sinusoidal_positions(5, 6, torch.float64, torch.device("cpu"))
    assert torch.allclose(p[:, 0], torch.sin(torch.arange(5.0, dtype=torch.float64)))
    assert torch.allclose(p[:, 1], torch.cos(torch.arange(5.0, dtype=torch.float64)))
    for call in (lambda: model.init_state(1), lambda: model.prefill(tokens), lambda: model.generate(tokens, 2)):
        with pytest.raises(ValueError, match="^readout: an auto-encoder stack"):
            call()
    with pytest.raises(ValueError, match="^tokens: an auto-encoder stack"):
        model(tokens[:, :0])
    with pytest.raises(ConfigError) as err:
        HybridLM(12, readout="first")
    assert err.value.key.endswith("readout")


def test_an_auto_encoder_learns_to_reconstruct_short_sequences():
    torch.manual_seed(0)
    model = HybridLM(5, d_model=32, n_layers=1, readout="last", mlp_expand=0)
    task = Compression(seq_len=4, vocab_size=5, num_train_examples=512)
    task.setup("fit")
    inputs, labels = task.train_set.tensors
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(250):
        batch = torch.randint(0, 512, (64,))
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]).flatten(0, 1), labels[batch].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(inputs).argmax(-1) == labels).float().mean()
    assert acc > 0.95, acc  # 4^3 = 64 distinct sequences: the code can hold them all


def test_fit_refuses_compression_without_the_auto_encoder_readout(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_cli(["fit", "-c", str(CONFIG), "--model.init_args.stack.readout=tokens", *QUIET])
    assert exit_.value.code == 2
    assert "model.init_args.stack.readout: Compression needs readout 'last', got 'tokens'" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIG.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_mad_configs_fit_hyenas_filter_to_the_task_and_compression_reads_the_last_position(path):
    import yaml

    config = yaml.safe_load(path.read_text())
    stack, data = config["model"]["init_args"]["stack"], config["data"]
    assert stack["mixers"]["H"]["init_args"]["l_max"] == data["init_args"]["seq_len"]
    assert (stack.get("readout") == "last") == data["class_path"].endswith("Compression")
