"""Bits per byte of a trained memorizing model as its memory grows at test time.

    python benchmarks/memory_size_eval.py runs/sweeps/memorizing_cpu/<run>/logs/version_0/checkpoints/last.ckpt
    python benchmarks/memory_size_eval.py CKPT --sizes 0 1024 4096 16384 --limit-batches 200

The checkpoint's model is rebuilt with the memory size of every MemorizingAttention layer set to
each of ``--sizes`` (the weights do not depend on it) and tested on the test split of its data
in segment mode (``ByteText(segments=True)``, the documents read in order, each memory emptied
where a slot starts a new document). The paper's claim (Wu et al. 2022, Sec. 4.3) is that a
model trained with a small memory improves when given a larger one; size 0 is the same weights
with retrieval off (the gate then sees nothing, and local attention is used alone).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import lightning as L
import torch


def memorizing_letters(mixers: dict) -> list[str]:
    return [k for k, spec in mixers.items() if spec.get("class_path", "").endswith("MemorizingAttention")]


def main() -> None:
    from hybrids import LanguageModel
    from hybrids.data import ByteText
    from hybrids.train.model_args import nest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1024, 4096, 16384])
    parser.add_argument("--limit-batches", type=int, default=None, help="test batches (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=None, help="slots (default: the run's)")
    args = parser.parse_args()

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    # LightningCLI adds "_class_path" / "_instantiator" to the saved hyper-parameters.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    data_args = {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    data_args.update(segments=True)
    if args.batch_size:
        data_args["batch_size"] = args.batch_size
    letters = memorizing_letters(hparams["mixers"])
    if not letters:
        raise SystemExit(f"{args.checkpoint}: no MemorizingAttention layer in this model")
    trained = [hparams["mixers"][k]["init_args"].get("memory_size") for k in letters]
    print(f"{args.checkpoint}: trained with memory_size {trained}; data {data_args}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| memory size (tokens) | test bpb | test loss (nats) | seconds |")
    print("| ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        mixers = copy.deepcopy(hparams["mixers"])
        for k in letters:
            mixers[k].setdefault("init_args", {})["memory_size"] = size
        # hparams.yaml records the arguments flat: nest them into stack / optim (train.model_args).
        arguments, _ = nest({**hparams, "mixers": mixers})
        model = LanguageModel(**{k: v for k, v in arguments.items() if k in ("stack", "optim", "max_loss", "carry_state")})
        model.load_state_dict(checkpoint["state_dict"])
        data = ByteText(**data_args)
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_test_batches=args.limit_batches)
        start = time.perf_counter()
        trainer.test(model, datamodule=data, verbose=False)
        metrics = trainer.callback_metrics
        print(f"| {size:,} | {float(metrics['test/bpb']):.4f} | {float(metrics['test/loss']):.4f} | "
              f"{time.perf_counter() - start:,.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
