"""``hybrids generate``: continue a prompt with a trained checkpoint.

    hybrids generate -c configs/transformer.yaml --ckpt_path last --prompt_tokens 5,9,2 --max_new_tokens 20
    hybrids generate -c CONFIG --ckpt_path runs/x/version_0/checkpoints/last.ckpt --prompt "text"

The model is built from the config exactly as ``fit`` builds it, and the checkpoint must belong to
that run (the identity rules of ``hybrids fit``; ``--ckpt_path last`` finds the newest). The prompt
is prefilled in parallel, then each new token is one recurrent step. Prints the continuation
(as text where the data module can decode tokens, token ids otherwise) and the prefill and decode
rates, each phase timed on its own ("n/a" where a phase is too short for the clock).

A bad value is one line, ``error: <argument>: <what is wrong, what is valid>``, and exit status
2, before the checkpoint is read or any decode state allocated; that includes a
``--max_new_tokens`` whose decode state (a KV cache grows with prompt + new tokens) would not fit
in the memory available. A ``--prompt`` whose bytes are not valid in the locale's encoding is
taken byte for byte by a byte-level model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

from hybrids.cli.keyed_argparse import KeyedArgumentParser, in_range, integer, number
from hybrids.errors import ConfigError
from hybrids.memory import available_memory, format_bytes
from hybrids.train.checkpoints import (
    CheckpointError,
    CheckpointRequestError,
    checkpoint_roots,
    read_checkpoint,
    resolve_checkpoint,
)

# torch.Generator.manual_seed takes [-2**63, 2**64); the command keeps to the non-negative part.
SEED_LIMIT = 2**64

# A phase shorter than this many ticks of the clock gets no rate: its time is mostly clock error
# (a few ticks of a 1 ns clock would print billions of tokens/s).
_TIMER_TICKS = 1000


def _parser() -> argparse.ArgumentParser:
    parser = KeyedArgumentParser(prog="hybrids generate", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, action="append", help="the run's config (repeatable)")
    parser.add_argument("--ckpt_path", required=True, help="'last' (this run's newest) or a checkpoint file")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text, for data modules that encode text")
    prompt.add_argument("--prompt_tokens", help="comma-separated token ids, e.g. 5,9,2")
    parser.add_argument("--max_new_tokens", type=in_range(integer, "an integer >= 0", lambda n: n >= 0), default=32,
                        help="at most this many tokens per sequence (0: none); refused if the decode state "
                        "it needs exceeds the memory available")
    parser.add_argument("--temperature", default=0.0, help="0 = greedy",
                        type=in_range(number, "a finite number >= 0 (0 = greedy)", lambda t: 0 <= t < float("inf")))
    # top_k and eos_token are checked against the vocabulary once the model is built.
    parser.add_argument("--top_k", type=integer, default=None)
    parser.add_argument("--top_p", type=in_range(number, "in (0, 1]", lambda p: 0 < p <= 1), default=None)
    parser.add_argument("--eos_token", type=integer, default=None)
    parser.add_argument("--seed", type=in_range(integer, "an integer in [0, 2**64)", lambda s: 0 <= s < SEED_LIMIT),
                        default=0)
    parser.add_argument("--batch", type=in_range(integer, "a positive integer", lambda b: b >= 1), default=1,
                        help="copies of the prompt decoded side by side")
    return parser


def _tokens(args, datamodule, parser) -> list[int]:
    if args.prompt_tokens is not None:
        try:
            tokens = [int(t) for t in args.prompt_tokens.split(",") if t.strip()]
        except ValueError:
            parser.error(f"prompt_tokens: expected comma-separated integers, got {args.prompt_tokens!r}")
        vocab = getattr(datamodule, "vocab_size", None)
        bad = [t for t in tokens if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            parser.error(f"prompt_tokens: ids {bad} are outside the vocabulary [0, {vocab})")
        return tokens
    encode = getattr(datamodule, "encode", None)
    if encode is None:
        parser.error(f"prompt: {type(datamodule).__name__} has no text encoding; give --prompt_tokens instead")
    try:
        return list(encode(args.prompt))
    except UnicodeEncodeError:
        # Python decodes argv bytes that are not valid in the locale's encoding to lone
        # surrogates (surrogateescape), which no text encoding takes. os.fsencode undoes that:
        # the bytes the user typed. For a byte-level model those bytes are the tokens.
        from hybrids.data.byte_text import ByteText  # noqa: PLC0415

        if isinstance(datamodule, ByteText):
            return list(os.fsencode(args.prompt))
        parser.error(f"prompt: holds bytes that are not valid text ({args.prompt!r}); {type(datamodule).__name__} "
                     "encodes text only; give valid text, or --prompt_tokens")


# -- memory ---------------------------------------------------------------------------------------


def _decode_memory(stack, batch: int, length: int) -> int:
    """Bytes that ``generate`` holds for ``batch`` sequences of ``length`` tokens (prompt and new
    tokens): every layer's state, which it allocates up front (a KV cache for all ``length``
    tokens), and the tokens themselves. A layer whose state size is unknown counts as 0, so this
    is a lower bound then."""
    from hybrids.errors import StateSizeUnknown  # noqa: PLC0415

    elements = 0
    for block in stack.blocks:
        size = getattr(block.mixer, "state_size", None)
        if size is None:
            continue
        try:
            elements += size(length)
        except (StateSizeUnknown, NotImplementedError):
            continue
    element_bytes = next(stack.parameters()).element_size()  # states take the parameters' dtype
    # int64 tokens, twice: the list of steps, then the joined output.
    return batch * (elements * element_bytes + 2 * 8 * length)


def _check_memory(stack, batch: int, prompt_len: int, max_new_tokens: int, parser) -> None:
    """Refuse, before anything is allocated, a decode whose state would not fit in memory."""
    available = available_memory(next(stack.parameters()).device)
    if available is None:
        return
    need = _decode_memory(stack, batch, prompt_len + max_new_tokens)
    if need <= available:
        return
    if _decode_memory(stack, batch, prompt_len) > available:
        key = "batch" if batch > 1 else "prompt"
        parser.error(f"{key}: a prompt of {prompt_len:,} tokens x batch {batch} needs about "
                     f"{format_bytes(_decode_memory(stack, batch, prompt_len))} of decode state, more than the "
                     f"{format_bytes(available)} of memory available; use a shorter prompt or a smaller batch")
    # The most new tokens that fit: the need grows with the length, so bisect.
    low, high = 0, max_new_tokens  # fits at low, not at high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _decode_memory(stack, batch, prompt_len + middle) <= available else (low, middle)
    parser.error(f"max_new_tokens: {max_new_tokens:,} new tokens x batch {batch} need about {format_bytes(need)} of "
                 f"decode state, more than the {format_bytes(available)} of memory available; at most {low:,} fit")


# -- output ---------------------------------------------------------------------------------------


def _rate(tokens: int, seconds: float | None) -> str:
    """``"1,234 tokens/s"``, or why there is no honest rate."""
    if tokens == 0:
        return "n/a (no tokens)"
    if seconds is None or seconds < _TIMER_TICKS * time.get_clock_info("perf_counter").resolution:
        return "n/a (too short to time)"
    return f"{tokens / seconds:,.0f} tokens/s"


def _print_text(text: str) -> None:
    """Print ``text`` whatever stdout's encoding: a character it cannot encode (the U+FFFD that
    stands for bytes that are not UTF-8, on an ASCII terminal) becomes an escape, not a crash."""
    try:
        print(text)
    except UnicodeEncodeError:
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode(encoding, errors="backslashreplace") + b"\n")
        sys.stdout.buffer.flush()


def _timed_generate(stack, prompt: torch.Tensor, args) -> tuple[torch.Tensor, float, float]:
    """``stack.generate`` and the seconds of its two phases, each timed on its own: the prefill
    (up to when ``prefill`` returns inside ``generate``) and the decode loop after it. Subtracting
    a separately timed prefill from the total, as before, left noise that could be ~0 s."""
    marks: list[float] = []
    prefill = stack.prefill

    def timed_prefill(*a, **k):
        result = prefill(*a, **k)
        marks.append(time.perf_counter())
        return result

    stack.prefill = timed_prefill  # an instance attribute shadows the method for this call only
    try:
        start = time.perf_counter()
        out = stack.generate(prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                             args.eos_token, args.seed)
        end = time.perf_counter()
    finally:
        del stack.prefill
    prefilled = marks[0] if marks else start
    return out, prefilled - start, end - prefilled


def generate_main(argv: list[str]) -> None:
    from hybrids.cli.fit import build_cli  # noqa: PLC0415  (Lightning loads only when generating)
    from hybrids.data.byte_text import without_corpus_check  # noqa: PLC0415

    parser = _parser()
    # Anything argparse does not know is a config override (--model.init_args.stack.d_model=32, ...).
    args, overrides = parser.parse_known_args(argv)
    cli_args = [item for path in args.config for item in ("-c", path)]
    # Building the trainer logs "Seed set", "GPU available", a tip...: nothing generate uses, and it
    # would stand before a refusal's one keyed line. Warnings still show.
    quieted = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        # generate wants the data module's encoding only: it may run where the corpus is absent.
        with without_corpus_check():
            cli = build_cli([*cli_args, "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
                             *overrides], run=False)
    finally:
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)
    model, datamodule = cli.model, cli.datamodule
    stack = model.model

    # Everything that can be refused is refused here, before the checkpoint is read or a state allocated.
    vocab = stack.config.vocab_size
    if args.eos_token is not None and not 0 <= args.eos_token < vocab:
        parser.error(f"eos_token: must be a token id in [0, {vocab}), got {args.eos_token}")
    if args.top_k is not None and not 1 <= args.top_k <= vocab:
        parser.error(f"top_k: must be in [1, {vocab}] (at most the vocabulary size), got {args.top_k}")
    tokens = _tokens(args, datamodule, parser)
    if not tokens:
        parser.error(f"{'prompt' if args.prompt_tokens is None else 'prompt_tokens'}: empty; give at least one token")
    _check_memory(stack, args.batch, len(tokens), args.max_new_tokens, parser)

    # The identity rules of fit/validate: 'last' is this run's newest, a file must be this run's.
    try:
        resolution = resolve_checkpoint(args.ckpt_path, "generate", cli.run_identity, checkpoint_roots(cli.trainer))
    except CheckpointRequestError as err:
        parser.error(str(err))
    for line in resolution.warnings:
        print(f"hybrids: {line}", file=sys.stderr)
    path = resolution.path
    try:
        checkpoint = read_checkpoint(path, weights=True)
    except CheckpointError as err:
        parser.error(f"ckpt_path: {err}")
    try:
        model.check_checkpoint_weights(checkpoint["state_dict"])
    except ConfigError as err:
        parser.error(f"{err.key}: {err.message}")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    prompt = torch.tensor([tokens] * args.batch, dtype=torch.long)
    try:
        with torch.no_grad():
            stack.prefill(prompt[:, :1])  # warm-up: thread pools, caches, libraries built on first use
            out, prefill_seconds, decode_seconds = _timed_generate(stack, prompt, args)
    except ValueError as err:
        parser.error(str(err))
    new = out[:, prompt.shape[1]:]
    decode = getattr(datamodule, "decode", None)
    for row in new.tolist():
        _print_text(decode(row) if decode is not None else ",".join(map(str, row)))
    print(
        f"hybrids: checkpoint {path} | prompt {prompt.shape[1]} tokens x {args.batch}: prefill "
        f"{_rate(prompt.numel(), prefill_seconds)} | decode {_rate(new.numel(), decode_seconds)} "
        f"({new.shape[1]} new tokens per sequence)",
        file=sys.stderr,
    )
