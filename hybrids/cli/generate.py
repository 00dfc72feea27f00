"""``hybrids generate``: continue a prompt with a trained checkpoint.

    hybrids generate -c configs/transformer.yaml --ckpt_path last --prompt_tokens 5,9,2 --max_new_tokens 20
    hybrids generate -c CONFIG --ckpt_path runs/x/version_0/checkpoints/last.ckpt --prompt "text"

The model is built from the config exactly as ``fit`` builds it, and the checkpoint must belong to
that run (the identity rules of ``hybrids fit``; ``--ckpt_path last`` finds the newest). The prompt
is prefilled in parallel, then each new token is one recurrent step. Prints the continuation
(as text where the data module can decode tokens, token ids otherwise) and the prefill and decode
rates.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from hybrids.train.checkpoints import (
    CheckpointError,
    CheckpointRequestError,
    checkpoint_roots,
    read_checkpoint,
    resolve_checkpoint,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybrids generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, action="append", help="the run's config (repeatable)")
    parser.add_argument("--ckpt_path", required=True, help="'last' (this run's newest) or a checkpoint file")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text, for data modules that encode text")
    prompt.add_argument("--prompt_tokens", help="comma-separated token ids, e.g. 5,9,2")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--eos_token", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1, help="copies of the prompt decoded side by side")
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
    return list(encode(args.prompt))


def generate_main(argv: list[str]) -> None:
    from hybrids.cli.fit import build_cli  # noqa: PLC0415  (Lightning loads only when generating)

    parser = _parser()
    # Anything argparse does not know is a config override (--model.init_args.stack.d_model=32, ...).
    args, overrides = parser.parse_known_args(argv)
    cli_args = [item for path in args.config for item in ("-c", path)]
    cli = build_cli([*cli_args, "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
                     *overrides], run=False)
    model, datamodule = cli.model, cli.datamodule
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
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    tokens = _tokens(args, datamodule, parser)
    if not tokens:
        parser.error("prompt: empty")
    prompt = torch.tensor([tokens] * args.batch, dtype=torch.long)
    stack = model.model
    try:
        with torch.no_grad():
            stack.prefill(prompt[:, :1])  # warm-up: thread pools, caches, libraries built on first use
            start = time.perf_counter()
            logits, states = stack.prefill(prompt)
            prefill_seconds = time.perf_counter() - start
            start = time.perf_counter()
            out = stack.generate(prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                                 args.eos_token, args.seed)
            total_seconds = time.perf_counter() - start
    except ValueError as err:
        parser.error(str(err))
    new = out[:, prompt.shape[1]:]
    # generate prefills again: its decode time is the total less one prefill.
    decode_seconds = max(total_seconds - prefill_seconds, 1e-9)
    decode = getattr(datamodule, "decode", None)
    for row in new.tolist():
        print(decode(row) if decode is not None else ",".join(map(str, row)))
    print(
        f"hybrids: checkpoint {path} | prompt {prompt.shape[1]} tokens x {args.batch}: prefill "
        f"{prompt.numel() / max(prefill_seconds, 1e-9):,.0f} tokens/s | decode {new.numel() / decode_seconds:,.0f} "
        f"tokens/s ({new.shape[1]} new tokens per sequence)",
        file=sys.stderr,
    )
