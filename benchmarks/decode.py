"""Decode cost against context length: what a fixed-state mixer saves over attention at inference.

    python benchmarks/decode.py                                 # the table and plot of results/2026-12-01-decode-cost.md
    python benchmarks/decode.py --contexts 1024 4096 --families attention mamba --steps 16
    python benchmarks/decode.py --families --hf path/to/mamba-130m-hf --contexts 1024 4096   # converted checkpoints

For each family, a 6-layer stack (SwiGLU MLPs, vocabulary 256) whose width is chosen so that its
parameter count is nearest ``--params`` (10M by default), batch 1, float32, ``torch.no_grad``:

- **decode**: the state after a context of L tokens, then the median time of one more token
  through ``HybridLM.step`` (the least, over 5 rounds that go round the contexts in turn, of
  the median of ``--steps`` tokens), and the state a
  decoder keeps per sequence (``state_elements``, in MiB of float32). The context is a real
  prefill of L random tokens (``HybridLM.prefill``), except for full attention beyond
  ``--max-attention-prefill`` tokens, whose quadratic prefill would take minutes here: its KV
  caches are then filled with random keys and values of the same length (decode cost depends
  only on the cache length, not on its contents).
- **prefill**: a 2,048-token prompt through ``HybridLM.prefill`` against the same tokens stepped
  one at a time, in tokens per second.

``--hf DIR ...`` adds Hugging Face checkpoint folders (``hybrids.hf.load_hf``: Mamba, Falcon-Mamba,
Mamba-2, RecurrentGemma, Jamba, Bamba), each measured as it is, as family ``hf:<folder name>``.

Results go to ``--out`` (JSON, one entry per measurement; a rerun skips the entries already there,
so an interrupted run resumes) and a plot beside it (PNG).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from pathlib import Path

import torch
from common import best_time

from hybrids import HybridLM
from hybrids.mixers import state_elements
from hybrids.mixers import Attention

VOCAB, LAYERS, HEAD_DIM, WINDOW = 256, 6, 64, 512

# family -> (pattern, mixers as a function of heads)
FAMILIES = {
    "attention": ("A", lambda h: {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": h}}}),
    "sliding-window": ("W", lambda h: {"W": {"class_path": "hybrids.mixers.SparseAttention",
                                             "init_args": {"heads": h, "window": WINDOW}}}),
    "mamba": ("M", lambda h: {"M": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 16}}}),
    "rglru": ("R", lambda h: {"R": {"class_path": "hybrids.mixers.RGLRU", "init_args": {}}}),
    "s4d": ("D", lambda h: {"D": {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 64}}}),
    "s4": ("S", lambda h: {"S": {"class_path": "hybrids.mixers.S4", "init_args": {"d_state": 64}}}),
    "mamba+sliding-window": ("MW", lambda h: {
        "M": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 16}},
        "W": {"class_path": "hybrids.mixers.SparseAttention", "init_args": {"heads": h, "window": WINDOW}},
    }),
}


def build(family: str, target_params: float) -> HybridLM:
    """The family's 6-layer stack whose width (a multiple of 64) gives the parameter count
    nearest ``target_params``."""
    pattern, mixers = FAMILIES[family]
    best = None
    for d_model in range(128, 1025, 64):
        torch.manual_seed(0)
        model = HybridLM(VOCAB, d_model=d_model, n_layers=LAYERS, pattern=pattern, mixers=mixers(d_model // HEAD_DIM),
                         mlp_expand=2.0)
        gap = abs(model.num_parameters() - target_params)
        if best is None or gap < best[0]:
            best = (gap, model)
        elif model.num_parameters() > target_params:
            break
    return best[1].eval()


def context_states(model: HybridLM, length: int, max_attention_prefill: int) -> tuple[list, str]:
    """Every layer's state after ``length`` tokens, and how it was made."""
    full_attention = all(type(b.mixer) is Attention for b in model.blocks)
    if not full_attention or length <= max_attention_prefill:
        _, states = model.prefill(torch.randint(model.config.vocab_size, (1, length)))
        return states, "prefill"
    states = []
    for block in model.blocks:
        cache = block.mixer.init_state(1, max_len=length + 1024)
        k = torch.randn(1, block.mixer.kv_heads, length, block.mixer.head_dim)
        cache.append(k, torch.randn_like(k))
        states.append(cache)
    return states, "random K/V"


def decode_times(model: HybridLM, contexts: dict[int, list], steps: int, rounds: int = 5) -> dict[int, float]:
    """Seconds per token from each context's states: for every context, the least over
    ``rounds`` rounds of the median of ``steps`` steps (after 4 warm-up steps).

    The rounds go round the contexts in turn, so that the machine's drift (a shared 2-core
    machine moves by 10-30% over minutes) falls on every context alike instead of on whichever
    was measured last."""
    token = torch.randint(model.config.vocab_size, (1,))
    best = {length: math.inf for length in contexts}
    for length, states in contexts.items():
        for _ in range(4):
            _, states = model.step(token, states)
        contexts[length] = states
    for _ in range(rounds):
        for length, states in contexts.items():
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                _, states = model.step(token, states)
                times.append(time.perf_counter() - start)
            contexts[length] = states
            best[length] = min(best[length], statistics.median(times))
    return best


def measure_prefill(model: HybridLM, length: int) -> dict:
    tokens = torch.randint(model.config.vocab_size, (1, length))
    model.prefill(tokens[:, :16])  # warm-up
    prefill = best_time(lambda: model.prefill(tokens), 2)

    def stepping():
        states = model.init_state(1)
        for t in range(length):
            _, states = model.step(tokens[:, t], states)

    stepped = best_time(stepping, 1)
    return {"prefill_tokens_per_s": length / prefill, "step_tokens_per_s": length / stepped, "speedup": stepped / prefill}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for family in dict.fromkeys(r["family"] for r in results):
        rows = sorted((r for r in results if r["family"] == family and r["kind"] == "decode"), key=lambda r: r["context"])
        if not rows:
            continue
        contexts = [r["context"] for r in rows]
        left.plot(contexts, [r["ms_per_token"] for r in rows], "o-", label=family)
        right.plot(contexts, [r["state_mib"] for r in rows], "o-", label=family)
    for ax, label in ((left, "decode time per token (ms)"), (right, "state per sequence (MiB, float32)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    converted = any(r["family"].startswith("hf:") for r in results)
    fig.suptitle("Decoding after a context, batch 1, CPU" if converted else
                 "Decoding after a context, ~10M-parameter 6-layer stacks, batch 1, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--hf", nargs="*", type=Path, default=[], help="Hugging Face checkpoint folders to measure too")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--params", type=float, default=10e6)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prefill-length", type=int, default=2048)
    parser.add_argument("--max-attention-prefill", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode_cpu.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["family"], r["kind"], r.get("context")) for r in results}

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch 1")
    models = {family: (lambda family=family: build(family, args.params)) for family in args.families}
    for folder in args.hf:
        from hybrids.hf import load_hf

        models[f"hf:{folder.name}"] = lambda folder=folder: load_hf(folder)
    with torch.no_grad():
        for family, make in models.items():
            model = make()
            params = model.num_parameters()
            width = model.config.d_model
            if (family, "prefill", args.prefill_length) not in done:
                row = {"family": family, "kind": "prefill", "context": args.prefill_length, "params": params,
                       "d_model": width, **measure_prefill(model, args.prefill_length)}
                results.append(row)
                args.out.write_text(json.dumps(results, indent=1))
                print(json.dumps(row), flush=True)
            todo = [length for length in args.contexts if (family, "decode", length) not in done]
            contexts, made = {}, {}
            for length in todo:
                start = time.perf_counter()
                contexts[length], how = context_states(model, length, args.max_attention_prefill)
                made[length] = (how, time.perf_counter() - start)
                gc.collect()  # the prefill's activations are garbage now: free them before timing
            if not contexts:
                continue
            # State sizes before decoding (the steps below add a few tokens to attention caches).
            sizes = {length: state_elements(states) * 4 / 2**20 for length, states in contexts.items()}
            for length, seconds in decode_times(model, contexts, args.steps).items():
                row = {
                    "family": family, "kind": "decode", "context": length, "params": params, "d_model": width,
                    "ms_per_token": 1e3 * seconds, "state_mib": sizes[length], "context_from": made[length][0],
                    "context_seconds": made[length][1],
                }
                results.append(row)
                args.out.write_text(json.dumps(results, indent=1))
                print(json.dumps(row), flush=True)
            del contexts
            gc.collect()
    plot(results, args.out.with_suffix(".png"))
    print_tables(results)


def print_tables(results: list[dict]) -> None:
    contexts = sorted({r["context"] for r in results if r["kind"] == "decode"})
    print("\n| family | params | " + " | ".join(f"{c:,}: ms/token, state" for c in contexts) + " | growth 1st->last |")
    print("| --- | ---: | " + " | ".join("---:" for _ in contexts) + " | ---: |")
    for family in dict.fromkeys(r["family"] for r in results):
        rows = {r["context"]: r for r in results if r["family"] == family and r["kind"] == "decode"}
        if not rows:
            continue
        cells = []
        for c in contexts:
            r = rows.get(c)
            mark = "" if r is None or r["context_from"] == "prefill" else "*"
            cells.append("" if r is None else f"{r['ms_per_token']:.2f}, {r['state_mib']:.2f} MiB{mark}")
        present = [rows[c]["ms_per_token"] for c in contexts if c in rows]
        growth = present[-1] / present[0] if len(present) > 1 else math.nan
        params = next(iter(rows.values()))["params"]
        size = f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params:,}"
        print(f"| {family} | {size} | " + " | ".join(cells) + f" | {growth:.2f}x |")
    print("\n| family | prefill (tokens/s) | stepping (tokens/s) | prefill speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        if r["kind"] == "prefill":
            print(f"| {r['family']} | {r['prefill_tokens_per_s']:,.0f} | {r['step_tokens_per_s']:,.0f} | {r['speedup']:.1f}x |")


if __name__ == "__main__":
    main()
