"""`hybrids generate` with a bad value: one keyed line on stderr (``error: <argument>: ...``) and
exit 2, before the checkpoint is read or any decode state allocated (issue 26); and the values that
used to crash it (a tiny temperature, a prompt of bytes that are not UTF-8) now work.

One tiny byte-level model is trained once for the module (a few seconds); every command then runs
in this process, so Lightning is imported once."""

import io
import os
import re
import sys
import time

import pytest
import torch

from hybrids import HybridLM
from hybrids.cli import generate as generate_cli
from hybrids.cli.fit import build_cli
from hybrids.cli.generate import generate_main
from helpers import ROOT

CONFIG = str(ROOT / "configs" / "bytes" / "attention.yaml")
# 1 attention layer of width 16 on a 21 kB corpus: 2 * 16 state elements (K and V) per token.
TINY = ["--data.init_args.path=corpus.txt", "--data.init_args.seq_len=16", "--data.init_args.batch_size=4",
        "--model.init_args.stack.d_model=16", "--model.init_args.stack.n_layers=1",
        "--model.init_args.stack.mlp_expand=0"]
VOCAB = 257


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate")
    words = "the quick brown fox jumps over a lazy dog while def class return import".split()
    (folder / "corpus.txt").write_text(" ".join(words[(i * 7) % len(words)] for i in range(4000)))
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = ["hybrids"]  # LightningCLI(args=...) warns about pytest's argv
    try:
        build_cli(["fit", "-c", CONFIG, *TINY, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                   "--trainer.limit_val_batches=1", "--test_after_fit=false", "--trainer.enable_progress_bar=false",
                   "--trainer.enable_model_summary=false"])
    finally:
        os.chdir(cwd)
        sys.argv = argv
    assert list(folder.rglob("last.ckpt"))
    return folder


@pytest.fixture
def generate(run_dir, monkeypatch, capsys):
    """generate(*args) -> (exit status, stdout, stderr) of `hybrids generate` on the tiny run."""
    monkeypatch.chdir(run_dir)
    monkeypatch.setattr(sys, "argv", ["hybrids"])

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            generate_main(["-c", CONFIG, "--ckpt_path", "last", *TINY, *args])
            code = 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def keyed(err: str) -> str:
    """The one line a refusal prints (the assertion: it is the only line)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def nothing_allocated(monkeypatch):
    """Fail a test that reads the checkpoint, allocates a decode state or prefills."""
    def refuse(*args, **kwargs):
        raise AssertionError("a refused command must not get this far")

    monkeypatch.setattr(generate_cli, "read_checkpoint", refuse)
    monkeypatch.setattr(HybridLM, "init_state", refuse)
    monkeypatch.setattr(HybridLM, "prefill", refuse)


# -- 1. max_new_tokens ----------------------------------------------------------------------------


def test_a_decode_state_larger_than_memory_is_refused_before_allocating(generate, nothing_allocated):
    code, _, err = generate("--prompt", "abc", "--max_new_tokens", str(10**12))
    assert code == 2
    # 10**12 tokens x (32 elements x 4 bytes + 16 bytes of token ids) = 144 TB: more than any machine's memory.
    assert re.fullmatch(r"error: max_new_tokens: 1,000,000,000,000 new tokens x batch 1 need about 144\.0 TB "
                        r"of decode state, more than the [\d,.]+ [GM]B of memory available; at most [\d,]+ fit",
                        keyed(err)), err


def test_the_memory_refusal_says_how_many_tokens_fit(generate, nothing_allocated, monkeypatch):
    # 144 bytes per token (above): 144,000 bytes hold 1,000 tokens, the 3 of the prompt and 997 new.
    monkeypatch.setattr(generate_cli, "available_memory", lambda device: 144_000)
    code, _, err = generate("--prompt", "abc", "--max_new_tokens", "5000")
    assert code == 2
    assert keyed(err) == ("error: max_new_tokens: 5,000 new tokens x batch 1 need about 0.7 MB of decode state, more "
                          "than the 0.1 MB of memory available; at most 997 fit")
    code, _, err = generate("--prompt", "abc", "--max_new_tokens", "1", "--batch", "1000")
    assert code == 2
    assert keyed(err) == ("error: batch: a prompt of 3 tokens x batch 1000 needs about 0.4 MB of decode state, more "
                          "than the 0.1 MB of memory available; use a shorter prompt or a smaller batch")


@pytest.mark.parametrize("value, line", [
    ("-1", "max_new_tokens: must be an integer >= 0, got '-1'"),
    ("1.5", "max_new_tokens: expected an integer, got '1.5'"),
    ("lots", "max_new_tokens: expected an integer, got 'lots'"),
])
def test_max_new_tokens_must_be_a_non_negative_integer(generate, nothing_allocated, value, line):
    code, _, err = generate("--prompt", "abc", "--max_new_tokens", value)
    assert code == 2 and keyed(err) == f"error: {line}"


def test_zero_new_tokens_prints_no_decode_rate(generate):
    code, out, err = generate("--prompt", "abc", "--max_new_tokens", "0")
    assert code == 0 and out == "\n"
    assert "decode n/a (no tokens) (0 new tokens per sequence)" in err


# -- 2. temperature -------------------------------------------------------------------------------


def test_a_tiny_temperature_samples_the_greedy_continuation(generate):
    code, greedy, err = generate("--prompt_tokens", "97,98,99", "--max_new_tokens", "12")
    assert code == 0, err
    for temperature in ("1e-40", "1e-300"):
        code, out, err = generate("--prompt_tokens", "97,98,99", "--max_new_tokens", "12", "--temperature", temperature)
        assert code == 0, err
        assert out == greedy


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "warm"])
def test_temperature_must_be_finite_and_non_negative(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--temperature", value)
    expected = (f"temperature: expected a number, got '{value}'" if value == "warm"
                else f"temperature: must be a finite number >= 0 (0 = greedy), got '{value}'")
    assert code == 2 and keyed(err) == f"error: {expected}"


# -- 3. batch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2"])
def test_batch_must_be_positive(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--batch", value)
    assert code == 2 and keyed(err) == f"error: batch: must be a positive integer, got '{value}'"


# -- 4. prompt bytes ------------------------------------------------------------------------------


def test_a_prompt_of_bytes_that_are_not_text_is_taken_byte_for_byte(generate):
    # What Python makes of the argv bytes b"\xff\xfe abc" (surrogateescape): lone surrogates.
    prompt = os.fsdecode(b"\xff\xfe abc")
    code, out, err = generate("--prompt", prompt, "--max_new_tokens", "8")
    assert code == 0, err
    assert "prompt 6 tokens x 1" in err
    code, same, _ = generate("--prompt_tokens", "255,254,32,97,98,99", "--max_new_tokens", "8")
    assert code == 0 and out == same


def test_a_prompt_a_text_encoding_cannot_take_is_refused(capsys):
    class Words:  # a data module that encodes text strictly (not byte-level)
        @staticmethod
        def encode(text):
            return list(text.encode("utf-8"))

    class Namespace:
        prompt_tokens = None
        prompt = os.fsdecode(b"\xff abc")

    with pytest.raises(SystemExit) as info:
        generate_cli._tokens(Namespace, Words(), generate_cli._parser())
    assert info.value.code == 2
    assert keyed(capsys.readouterr().err) == ("error: prompt: holds bytes that are not valid text ('\\udcff abc'); "
                                              "Words encodes text only; give valid text, or --prompt_tokens")


def test_generated_text_prints_on_a_terminal_that_cannot_show_it(monkeypatch):
    # The U+FFFD that stands for bytes that are not UTF-8, on an ASCII stdout: an escape, no crash.
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    generate_cli._print_text("a\ufffdb")
    stdout.flush()
    assert stdout.buffer.getvalue() == b"a\\ufffdb\n"


# -- 5. eos_token, top_k, top_p ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["500", "257", "-1"])
def test_eos_token_must_be_in_the_vocabulary(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--eos_token", value)
    assert code == 2 and keyed(err) == f"error: eos_token: must be a token id in [0, {VOCAB}), got {value}"


@pytest.mark.parametrize("value", ["0", "-3", "1000"])
def test_top_k_must_be_within_the_vocabulary(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--top_k", value)
    assert code == 2
    assert keyed(err) == f"error: top_k: must be in [1, {VOCAB}] (at most the vocabulary size), got {value}"


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan"])
def test_top_p_must_be_in_the_unit_interval(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--top_p", value)
    assert code == 2 and keyed(err) == f"error: top_p: must be in (0, 1], got '{value}'"


# -- 6. seed --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["100000000000000000000000", str(2**64), "-1"])
def test_seed_must_be_in_the_generators_range(generate, nothing_allocated, value):
    code, _, err = generate("--prompt", "abc", "--seed", value)
    assert code == 2 and keyed(err) == f"error: seed: must be an integer in [0, 2**64), got '{value}'"


def test_the_largest_seed_is_accepted(generate):
    code, _, err = generate("--prompt", "abc", "--seed", str(2**64 - 1), "--temperature", "1", "--max_new_tokens", "2")
    assert code == 0, err


# -- 7. rates -------------------------------------------------------------------------------------


def test_decode_is_timed_on_its_own(generate, monkeypatch):
    """A slow prefill does not enter the decode rate, and a decode rate comes from the decode's own
    time: 4 steps of >= 20 ms are at most 50 tokens/s (the old total-less-prefill arithmetic
    printed billions of tokens/s when the two prefills took different times)."""
    prefill, step = HybridLM.prefill, HybridLM.step
    calls = []

    def slow_prefill(self, tokens, states=None):
        calls.append(tokens.shape[1])
        if tokens.shape[1] > 1:  # not the warm-up
            time.sleep(1.0)
        return prefill(self, tokens, states)

    def slow_step(self, tokens, states):
        time.sleep(0.02)
        return step(self, tokens, states)

    monkeypatch.setattr(HybridLM, "prefill", slow_prefill)
    monkeypatch.setattr(HybridLM, "step", slow_step)
    code, _, err = generate("--prompt", "abc", "--max_new_tokens", "4")
    assert code == 0, err
    assert calls == [1, 3], "one warm-up and the prefill inside generate; no second timed prefill"
    prefill_rate = float(re.search(r"prefill ([\d,.]+) tokens/s", err)[1].replace(",", ""))
    decode_rate = float(re.search(r"decode ([\d,.]+) tokens/s", err)[1].replace(",", ""))
    assert prefill_rate <= 3.0  # 3 tokens in >= 1 s
    assert 4 / 1.0 < decode_rate <= 4 / 0.08  # without the prefill's second, within the steps' time


def test_no_rate_from_a_time_the_clock_cannot_resolve():
    assert generate_cli._rate(5, 0.0) == "n/a (too short to time)"
    assert generate_cli._rate(5, 1e-12) == "n/a (too short to time)"
    assert generate_cli._rate(0, 1.0) == "n/a (no tokens)"
    assert generate_cli._rate(5, 0.5) == "10 tokens/s"


# -- the parser's own reports -----------------------------------------------------------------------


def test_argparse_reports_are_keyed_too(generate, nothing_allocated):
    code, _, err = generate("--prompt", "abc", "--prompt_tokens", "1,2")
    assert code == 2 and keyed(err) == "error: prompt_tokens: not allowed with argument --prompt"


def test_generate_needs_the_checkpoint_not_the_corpus(generate, run_dir):
    """generate takes only the byte encoding from the data module: it runs where the corpus the
    model was trained on is absent (the config still names it, as the run's identity does)."""
    corpus = run_dir / "corpus.txt"
    moved = run_dir / "corpus.moved"
    corpus.rename(moved)
    try:
        code, out, err = generate("--prompt", "the quick", "--max_new_tokens", "4")
    finally:
        moved.rename(corpus)
    assert code == 0, err
    assert "decode" in err and out.strip()
