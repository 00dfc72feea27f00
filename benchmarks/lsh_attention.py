"""Reformer against full attention at equal parameters: training time and memory at long lengths.

    python benchmarks/lsh_attention.py                           # CPU: L = 4,096 and 16,384
    python benchmarks/lsh_attention.py --device cuda --seq-lens 4096 16384 65536

The two stacks of configs/bytes/attention.yaml and configs/bytes/reformer.yaml (width 128, 4
layers, 689,408 and 689,920 parameters; the Reformer is reversible LSH attention, 2 rounds of 8
buckets, chunks of 16), plus LSH attention without the reversible stack, one forward and backward
pass of next-token cross-entropy on one sequence of L random bytes, each in a fresh process:

- saved MiB: the bytes of the tensors autograd keeps for the backward pass (through
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once): activation memory, exactly;
- peak MiB: on CUDA ``torch.cuda.max_memory_allocated`` during a step minus before it; on the
  CPU the rise of the resident-set high-water mark over the first step of a fresh process (after
  a warm-up the allocator serves a step from memory it has cached, and the mark no longer moves);
- ms: best of ``--repeats`` forward + backward passes.

Full attention here is ``scaled_dot_product_attention``, whose fused kernels keep no (L, L)
scores either: its memory is linear in L too, and its time quadratic. LSH attention's time is
O(L * chunk_size) per round plus the sorts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from common import best_time, cuda_peak_and_ms, run_child, saved_mib, status_kib

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "bytes"
STACKS = {"attention": ("attention.yaml", {}), "lsh": ("reformer.yaml", {"reversible": False}),
          "reformer": ("reformer.yaml", {})}


def build(name: str):
    from hybrids import HybridLM

    file, override = STACKS[name]
    args = yaml.safe_load((CONFIGS / file).read_text())["model"]["init_args"]
    keep = ("d_model", "n_layers", "pattern", "mixers", "mlp_expand", "reversible")
    args = {k: v for k, v in args.items() if k in keep} | override
    return HybridLM(vocab_size=257, **args)


def measure(config: dict) -> dict:
    torch.manual_seed(0)
    device = torch.device(config["device"])
    model = build(config["stack"]).to(device)
    tokens = torch.randint(0, 256, (1, config["seq_len"] + 1), device=device)

    def loss() -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    def step() -> None:
        loss().backward()
        model.zero_grad(set_to_none=True)

    peak_mib = None
    if device.type == "cpu":
        # The first step of a fresh process, before the allocator caches anything: the rise of
        # the resident set's high-water mark is what one step allocates at its peak.
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = status_kib("VmRSS")
        step()
        peak_mib = (status_kib("VmHWM") - before) / 1024

    result = {"params": sum(p.numel() for p in model.parameters()), "saved_mib": saved_mib(loss)}
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        result.update(cuda_peak_and_ms(step, config["repeats"]))
    else:
        step()  # warm-up
        result.update(peak_mib=peak_mib, ms=1e3 * best_time(step, config["repeats"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    print(f"{args.device}, batch 1, fp32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| L | stack | params | saved MiB | peak MiB | ms (fwd + bwd) | time vs attention |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for seq_len in args.seq_lens:
        base = None
        for stack in STACKS:
            r = run_child(__file__, {"device": args.device, "seq_len": seq_len, "stack": stack, "repeats": args.repeats})
            base = base or r["ms"]
            peak = f"{r['peak_mib']:,.1f}"
            print(f"| {seq_len:,} | {stack} | {r['params']:,} | {r['saved_mib']:,.1f} | {peak} | {r['ms']:,.0f} | "
                  f"{r['ms'] / base:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
