"""Training memory against depth: an ordinary stack against a reversible one (hybrids/model/reversible.py).

    python benchmarks/reversible_memory.py                      # CPU: depths 2, 4, 8, 16
    python benchmarks/reversible_memory.py --device cuda --seq-len 4096 --depths 4 8 16 32

For each depth, one forward and backward pass of a transformer stack (attention + SwiGLU MLP,
width 256, batch 4) with next-token cross-entropy, each configuration in a fresh process:

- saved MiB: the bytes of the tensors autograd keeps for the backward pass (counted through
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once): activation memory, exactly;
- peak MiB (CUDA only): ``torch.cuda.max_memory_allocated`` during one step minus what was
  allocated before it (the CPU's resident-set high-water mark moved by a few MiB either way
  between repeats here, dominated by the allocator's caching, so it is not reported);
- ms: best of ``--repeats`` forward + backward passes.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from common import best_time, cuda_peak_and_ms, run_child, saved_mib

WIDTH, BATCH, VOCAB = 256, 4, 256


def measure(config: dict) -> dict:
    from hybrids import HybridLM

    torch.manual_seed(0)
    device = torch.device(config["device"])
    model = HybridLM(vocab_size=VOCAB, d_model=WIDTH, n_layers=config["depth"], pattern="A", mlp_expand=2,
                     mixers={"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 4}}},
                     reversible=config["reversible"]).to(device)
    tokens = torch.randint(0, VOCAB, (BATCH, config["seq_len"] + 1), device=device)

    def loss() -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    def step() -> None:
        loss().backward()
        model.zero_grad(set_to_none=True)

    result = {"saved_mib": saved_mib(loss)}
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        result.update(cuda_peak_and_ms(step, config["repeats"]))
    else:
        step()  # warm-up
        result.update(peak_mib=None, ms=1e3 * best_time(step, config["repeats"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    print(f"{args.device}, width {WIDTH}, batch {BATCH}, seq_len {args.seq_len}, attention + SwiGLU, fp32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| depth | saved MiB ordinary | saved MiB reversible | peak MiB ordinary | peak MiB reversible "
          "| ms ordinary | ms reversible | time ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for depth in args.depths:
        row = {}
        for reversible in (False, True):
            config = {"device": args.device, "seq_len": args.seq_len, "depth": depth,
                      "reversible": reversible, "repeats": args.repeats}
            row[reversible] = run_child(__file__, config)
        o, r = row[False], row[True]
        peak = [f"{x['peak_mib']:,.1f}" if x["peak_mib"] is not None else "-" for x in (o, r)]
        print(f"| {depth} | {o['saved_mib']:,.1f} | {r['saved_mib']:,.1f} | {peak[0]} | {peak[1]} | "
              f"{o['ms']:,.1f} | {r['ms']:,.1f} | {r['ms'] / o['ms']:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
