"""``hybrids convert --from-hf DIR --out OUT``: a Hugging Face transformers checkpoint folder as a
run the zoo's CLI uses (issue 28): ``OUT/config.yaml`` (the stack, and a TokenizedText data
module reading text through the folder's tokenizer) and ``OUT/model.ckpt`` (the weights, under
that config's run identity), so that

    hybrids generate -c OUT/config.yaml --ckpt_path OUT/model.ckpt --prompt "..."
    hybrids test -c OUT/config.yaml --ckpt_path OUT/model.ckpt
    hybrids fit -c OUT/config.yaml --ckpt_path OUT/model.ckpt --load_weights_only true   # fine-tune

work as for a run trained here. :func:`convert_hf` is the same from Python.

``hybrids convert --to_hf -c CONFIG --ckpt_path CKPT --out DIR`` goes the other way: a run's
checkpoint as a folder ``transformers.AutoModelForCausalLM.from_pretrained`` loads, for the stacks
one of its architectures expresses (:mod:`hybrids.hf.export`). Exit status 0, or 2 with one
``error: <argument>: ...`` line and nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hybrids.cli.keyed_argparse import KeyedArgumentParser, text

CONFIG_FILE, CHECKPOINT_FILE = "config.yaml", "model.ckpt"


def _parser() -> argparse.ArgumentParser:
    parser = KeyedArgumentParser(prog="hybrids convert",
                                 description="A Hugging Face checkpoint folder as a config and weights the CLI loads.")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from_hf", "--from-hf", dest="from_hf", type=text("a folder"),
                           help="the transformers checkpoint folder (config.json, safetensors, tokenizer.json)")
    direction.add_argument("--to_hf", "--to-hf", dest="to_hf", action="store_true",
                           help="write the run's checkpoint (-c, --ckpt_path) in the transformers format")
    parser.add_argument("-c", "--config", action="append", default=[], help="with --to_hf: the run's config")
    parser.add_argument("--ckpt_path", type=text("a checkpoint file"), default=None, help="with --to_hf: the checkpoint")
    parser.add_argument("--out", required=True, type=text("a folder"), help="where config.yaml and model.ckpt go")
    parser.add_argument("--tokenizer", type=text("a tokenizer.json or its folder"), default=None,
                        help="the tokenizer (default: the one in --from_hf)")
    parser.add_argument("--data_path", type=text("a text file or folder"), default=None,
                        help="the corpus the config's data module reads (default: the standard library's source)")
    parser.add_argument("--seq_len", type=int, default=256, help="tokens per training chunk in the config")
    parser.add_argument("--batch_size", type=int, default=8, help="chunks per batch in the config")
    return parser


def run_config(stack, tokenizer: str, data_path: str | None, seq_len: int, batch_size: int, name: str) -> dict[str, Any]:
    """The YAML-ready config of a converted model: the stack (the data module gives its
    vocabulary), TokenizedText over the corpus, a CSV logger named after the model."""
    fields = {k: v for k, v in dataclasses.asdict(stack).items() if k != "vocab_size"}
    fields["mixers"] = {letter: dict(spec) for letter, spec in stack.mixers.items()}
    return {
        "seed_everything": 0,
        "model": {"class_path": "hybrids.LanguageModel", "init_args": {"stack": fields}},
        "data": {"class_path": "hybrids.data.TokenizedText", "init_args": {
            "tokenizer": tokenizer, "path": data_path, "seq_len": seq_len, "batch_size": batch_size,
            "vocab_size": stack.vocab_size}},
        "trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": name}}},
    }


def convert_hf(source: str | Path, out: str | Path, tokenizer: str | Path | None = None, data_path: str | None = None,
               seq_len: int = 256, batch_size: int = 8) -> tuple[Path, Path]:
    """Write ``out/config.yaml`` and ``out/model.ckpt`` for the checkpoint in ``source`` (module
    docstring); returns their paths. Raises :class:`hybrids.hf.ConversionError`,
    :class:`hybrids.hf.FolderError` or :class:`hybrids.errors.ConfigError` naming the part at fault."""
    import lightning
    import torch
    import yaml

    from hybrids.cli.fit import build_cli
    from hybrids.data.token_text import load_tokenizer
    from hybrids.hf import stack_and_weights
    from hybrids.hf.folder import read_config
    from hybrids.train.checkpoints import IDENTITY_KEY

    source, out = Path(source).resolve(), Path(out)
    stack, weights = stack_and_weights(source)
    tokenizer = str(Path(tokenizer).resolve()) if tokenizer is not None else str(source)
    load_tokenizer(tokenizer)  # refused here, before anything is written, if it is not there
    config = run_config(stack, tokenizer, data_path, seq_len, batch_size, f"hf_{read_config(source)['model_type']}")
    config_path, checkpoint_path = out / CONFIG_FILE, out / CHECKPOINT_FILE
    present = [p.name for p in (config_path, checkpoint_path) if p.exists()]
    if present:
        raise FileExistsError(f"{out} already holds {', '.join(present)}; give a new folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # Written under temporary names and renamed once both exist: a refusal leaves nothing behind.
    partial_config, partial_checkpoint = out / f".{CONFIG_FILE}.partial", out / f".{CHECKPOINT_FILE}.partial"
    try:
        partial_config.write_text(f"# hybrids convert --from_hf {source}\n" + yaml.safe_dump(config, sort_keys=False))
        # The identity the CLI gives this config, so that generate/test accept the checkpoint as the run's.
        argv = sys.argv
        sys.argv = ["hybrids"]
        try:
            cli = build_cli(["-c", str(partial_config), "--trainer.logger=false"], run=False)
        finally:
            sys.argv = argv
        cli.model.model.load_state_dict(weights, strict=True)
        torch.save({"state_dict": cli.model.state_dict(), IDENTITY_KEY: cli.run_identity,
                    "pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0,
                    "converted_from": str(source)}, partial_checkpoint)
        partial_config.replace(config_path)
        partial_checkpoint.replace(checkpoint_path)
    finally:
        partial_config.unlink(missing_ok=True)
        partial_checkpoint.unlink(missing_ok=True)
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
    return config_path, checkpoint_path


def export_run(configs: list[str], checkpoint: str, out: str | Path) -> Path:
    """A run's checkpoint (its configs and a checkpoint file) in the transformers format in
    ``out`` (:func:`hybrids.hf.export.export_hf`); raises ConversionError naming what has no
    counterpart (before the checkpoint is read) or CheckpointError. The checkpoint's weights are
    loaded strictly into the configs' stack (no identity check: any checkpoint whose weights fit
    the stack exports)."""
    from hybrids.cli.fit import build_cli
    from hybrids.hf.export import export_hf, export_parts
    from hybrids.train.checkpoints import read_checkpoint

    argv = sys.argv
    sys.argv = ["hybrids"]
    try:
        cli = build_cli([item for path in configs for item in ("-c", path)] + ["--trainer.logger=false"], run=False)
    finally:
        sys.argv = argv
    export_parts(cli.model.model)  # refused here, before the checkpoint is read, if nothing expresses it
    state = read_checkpoint(checkpoint, weights=True)["state_dict"]
    stack = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    cli.model.model.load_state_dict(stack, strict=True)
    return export_hf(cli.model.model.eval(), out)


def convert_main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from hybrids.errors import ConfigError
    from hybrids.hf import ConversionError, FolderError
    from hybrids.train.checkpoints import CheckpointError

    if args.to_hf:
        if not args.config or args.ckpt_path is None:
            parser.error("to_hf: needs the run's config (-c) and its checkpoint (--ckpt_path FILE)")
        if Path(args.out).exists() and any(Path(args.out).iterdir()):
            parser.error(f"out: {args.out} is not empty; give a new folder")
        try:
            folder = export_run(args.config, args.ckpt_path, args.out)
        except ConversionError as err:
            print(f"error: to_hf: {err}", file=sys.stderr)
            return 2
        except CheckpointError as err:
            print(f"error: ckpt_path: {err}", file=sys.stderr)
            return 2
        print(f"hybrids: wrote {folder}/config.json and model.safetensors "
              f"(transformers.AutoModelForCausalLM.from_pretrained('{folder}'))")
        return 0
    if args.config or args.ckpt_path:
        parser.error("config: -c and --ckpt_path go with --to_hf")

    try:
        config_path, checkpoint_path = convert_hf(args.from_hf, args.out, args.tokenizer, args.data_path,
                                                  args.seq_len, args.batch_size)
    except (ConversionError, FolderError) as err:
        print(f"error: from_hf: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        key = "tokenizer" if err.key == "tokenizer" else err.full_key
        print(f"error: {key}: {err.message}", file=sys.stderr)
        return 2
    except FileExistsError as err:
        print(f"error: out: {err}", file=sys.stderr)
        return 2
    print(f"hybrids: wrote {config_path} and {checkpoint_path}\n"
          f"  hybrids generate -c {config_path} --ckpt_path {checkpoint_path} --prompt \"...\"\n"
          f"  hybrids test -c {config_path} --ckpt_path {checkpoint_path}")
    return 0
