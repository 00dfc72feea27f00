"""The stack's prefill and generation: prefill + step equals forward, generation equals greedy
decoding by repeated forward passes, sampling is seeded and filtered as documented."""

import pytest
import torch

from hybrids import HybridLM
from hybrids.model.sampling import next_token
from mixer_cases import MIXER_CASES
from helpers import ROOT

VOCAB = 23


def spec(case):
    cls, kwargs = MIXER_CASES[case]
    return {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": kwargs}


def stack(letters: dict[str, str], pattern: str, dtype=torch.float64) -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(VOCAB, d_model=16, pattern=pattern, n_layers=len(pattern), mixers={k: spec(v) for k, v in letters.items()})
    return model.to(dtype).eval()


STACKS = {
    "attention": ({"A": "attention"}, "AA"),
    "samba": ({"M": "mamba", "W": "sparse-window"}, "MW"),
    "griffin": ({"R": "rglru", "A": "attention-gqa-norope"}, "RRA"),
    "s4-hybrid": ({"S": "s4-legs", "D": "s4d-legs-zoh", "A": "attention"}, "SDA"),
}


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("L0", [1, 7, 20])
def test_prefill_then_step_equals_forward(name, L0):
    model = stack(*STACKS[name])
    tokens = torch.randint(VOCAB, (2, 24))
    with torch.no_grad():
        full = model(tokens)
        logits, states = model.prefill(tokens[:, :L0])
        steps = [logits]
        for t in range(L0, tokens.shape[1]):
            step_logits, states = model.step(tokens[:, t], states)
            steps.append(step_logits[:, None])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STACKS)
def test_chunked_prefill_equals_forward(name):
    model = stack(*STACKS[name])
    tokens = torch.randint(VOCAB, (2, 30))
    with torch.no_grad():
        first, states = model.prefill(tokens[:, :11])
        second, states = model.prefill(tokens[:, 11:], states)
        torch.testing.assert_close(torch.cat((first, second), dim=1), model(tokens), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STACKS)
def test_greedy_generation_equals_repeated_forward_passes(name):
    model = stack(*STACKS[name])
    prompt = torch.randint(VOCAB, (3, 5))
    generated = model.generate(prompt, max_new_tokens=12)
    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            expected = torch.cat((expected, model(expected)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(generated, expected)


def test_sampling_is_seeded_and_stops_at_eos():
    model = stack({"A": "attention"}, "AA", torch.float32)
    prompt = torch.randint(VOCAB, (4, 3))
    a = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=7)
    b = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=7)
    c = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    eos = int(a[0, 5])
    stopped = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=7, eos_token=eos)
    for row in stopped:
        hits = (row[3:] == eos).nonzero()
        if len(hits):
            assert (row[3 + int(hits[0]):] == eos).all(), "after eos there is only eos"


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(next_token(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    # top_p 0.7: 0.5 alone is below it, 0.5 + 0.3 reaches it: tokens 0 and 1 only.
    assert set(next_token(logits, 1.0, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert set(next_token(logits, 1.0, top_p=0.4, generator=g).tolist()) == {0}
    counts = torch.bincount(next_token(logits, 1.0, generator=g), minlength=4) / 2000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.04, rtol=0)
    assert torch.equal(next_token(logits[:2], 0.0), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("temperature", [1e-30, 1e-40, 1e-46, 1e-300, 5e-324])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_tiny_temperature_samples_the_argmax(temperature, dtype):
    """Logits / 1e-40 overflow float32 (softmax of inf is nan, and multinomial refused it): the
    limit T -> 0 is greedy, and that is what such a temperature gives, filters or not."""
    logits = (torch.randn(64, VOCAB) * 5).to(dtype)
    logits[:, 0] = 0.0  # 0 / a temperature float32 rounds to 0 is nan
    g = torch.Generator().manual_seed(0)
    for kwargs in ({}, {"top_k": 3}, {"top_p": 0.5}):
        assert torch.equal(next_token(logits, temperature, generator=g, **kwargs), logits.argmax(-1))


def test_ordinary_temperatures_sample_as_before():
    """The overflow guard leaves a temperature whose scores are finite on the float32 path: the
    same seed gives the same tokens as softmax(logits.float() / T)."""
    logits = torch.randn(500, VOCAB) * 3
    for temperature in (0.05, 0.7, 1.0, 3.0):
        expected = torch.multinomial((logits.float() / temperature).softmax(-1), 1,
                                     generator=torch.Generator().manual_seed(1))[:, 0]
        got = next_token(logits, temperature, generator=torch.Generator().manual_seed(1))
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"),
     ({"max_new_tokens": -1}, "max_new_tokens"), ({"eos_token": VOCAB}, "eos_token"),
     ({"eos_token": -1}, "eos_token"), ({"seed": 2**64}, "seed"), ({"seed": 1.5}, "seed")],
)
def test_bad_generation_arguments_are_named(kwargs, match):
    model = stack({"A": "attention"}, "A", torch.float32)
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=f"^{match}:"):
        model.generate(torch.randint(VOCAB, (1, 3)), **args)
    with pytest.raises(TypeError, match="^prompt:"):
        model.generate(torch.randn(1, 3), 2)
    with pytest.raises(ValueError, match="^prompt:.*batch >= 1"):
        model.generate(torch.randint(VOCAB, (0, 3)), 2)


def test_generate_command_on_a_tiny_checkpoint(tmp_path):
    """`hybrids generate` builds the run's model, loads this run's checkpoint, prints the greedy
    continuation (token ids for MQAR) and the rates; it resolves checkpoints with the identity
    rules of fit and validate (tested in test_runs.py)."""
    import subprocess
    import sys

    config = str(ROOT / "configs" / "transformer.yaml")
    small = ["--data.init_args.num_train_examples=64", "--data.init_args.num_test_examples=16"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    run = lambda *args: subprocess.run([sys.executable, "-m", "hybrids", *args], cwd=tmp_path, capture_output=True,  # noqa: E731
                                       text=True, timeout=300)
    fit = run("fit", "-c", config, "--trainer.max_epochs=1", *small, *quiet)
    assert fit.returncode == 0, fit.stderr[-2000:]
    out = run("generate", "-c", config, "--ckpt_path", "last", "--prompt_tokens", "5,70,9", "--max_new_tokens", "6", *small)
    assert out.returncode == 0, out.stderr[-2000:]
    continuation = [int(t) for t in out.stdout.strip().splitlines()[-1].split(",")]
    assert len(continuation) == 6 and all(0 <= t < 128 for t in continuation)
    assert "prefill" in out.stderr and "tokens/s" in out.stderr

    # The same greedy continuation from Python, through the checkpoint the command used.
    from hybrids.train.checkpoints import read_checkpoint
    from hybrids.cli.fit import build_cli

    cli = build_cli(["-c", config, *small], run=False)
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    cli.model.load_state_dict(read_checkpoint(ckpt, weights=True)["state_dict"])
    expected = cli.model.eval().model.generate(torch.tensor([[5, 70, 9]]), 6)[0, 3:].tolist()
    assert continuation == expected

    bad = run("generate", "-c", config, "--ckpt_path", "last", "--prompt_tokens", "5,999", *small)
    assert bad.returncode == 2 and "prompt_tokens: ids [999] are outside the vocabulary [0, 128)" in bad.stderr
