"""Evaluating on sequences far longer than training: read them in chunks through the recurrent form.

A forward pass over one example of 2^20 tokens holds every layer's activations for every token
at once. Chunked prefill (:meth:`hybrids.model.HybridLM.prefill_features`, each chunk continuing
from the state the previous one left) holds one chunk's activations and the mixers' states:

- fixed-state mixers (Mamba, RG-LRU, S4D, linear attention, sliding windows): memory is bounded
  by the chunk, whatever the length;
- attention keeps every key and value (its state grows linearly) and each chunk's queries score
  against all of them: memory grows as ``chunk x length``, time as ``length^2``.

:func:`labelled_logits_chunked` estimates the memory of one example before it starts
(:func:`bytes_per_example`), splits the batch so that a part fits the budget
(:func:`memory_budget`), and raises :class:`LengthTooLong` when even one example does not fit:
the caller skips that length with a clear message instead of being killed for memory.
"""

from __future__ import annotations

import os

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import StateSizeUnknown

# Activation bytes per token of a chunk, in units of d_model elements: the projections, the
# expanded inner width (Mamba's 2x with its gates and scan inputs), the MLP's hidden width and
# autograd-free temporaries. Deliberately generous: an overestimate only makes sub-batches smaller.
ACTIVATION_WIDTHS = 64
# Score bytes per (query, key) pair of a growing-state mixer: the scores and their softmax.
SCORE_COPIES = 2


class LengthTooLong(RuntimeError):
    """Evaluating one example of this length would exceed the memory budget."""


def memory_budget(device: torch.device) -> int:
    """Bytes an evaluation may use: ``$HYBRIDS_EVAL_MEMORY_GB`` if set, else 80% of the free
    memory of a CUDA device, or half of the memory the OS reports available on a CPU."""
    forced = os.environ.get("HYBRIDS_EVAL_MEMORY_GB")
    if forced:
        return int(float(forced) * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): a laptop's safe guess


def bytes_per_example(model, length: int, chunk: int) -> int:
    """An upper estimate of the memory one example of ``length`` tokens needs, read in chunks of
    ``chunk`` tokens: every layer's state after ``length`` tokens, one chunk's activations, and
    the (chunk x length) scores of the largest growing-state layer (module docstring)."""
    element = next(model.parameters()).element_size()
    d_model = model.config.d_model
    chunk = min(chunk, length)
    state, scores = 0, 0
    for block in model.blocks:
        mixer = block.mixer
        try:
            at_length, at_chunk = mixer.state_size(length), mixer.state_size(chunk)
        except (AttributeError, StateSizeUnknown):
            # Unknown: assume it keeps a d_model-wide vector per token and attends over them.
            at_length, at_chunk = 2 * d_model * length, 2 * d_model * chunk
        state += at_length
        if at_length > at_chunk:  # grows with the length: the chunk scores against every token
            heads = int(getattr(mixer, "heads", 1) or 1)
            scores = max(scores, SCORE_COPIES * heads * chunk * length)
    return element * (state + scores + ACTIVATION_WIDTHS * d_model * chunk)


@torch.no_grad()
def labelled_logits_chunked(
    model, inputs: torch.Tensor, labels: torch.Tensor, chunk: int, budget: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LM head's logits at the labelled positions of ``inputs`` (B, L), read ``chunk`` tokens
    at a time through :meth:`~hybrids.model.HybridLM.prefill_features`, in sub-batches that fit
    ``budget`` bytes (default :func:`memory_budget`).

    Returns ``logits`` (n, vocab), ``targets`` (n,) and ``rows`` (n,), the example each labelled
    position belongs to, in row-major order of the positions (as ``labels[labels != -100]``).
    Raises :class:`LengthTooLong` if one example alone exceeds the budget.
    """
    batch, length = inputs.shape
    if budget is None:
        budget = memory_budget(inputs.device)
    per_example = bytes_per_example(model, length, chunk)
    fits = budget // per_example
    if fits < 1:
        raise LengthTooLong(
            f"one example of {length:,} tokens needs about {per_example / 2**30:.1f} GiB in chunks of {chunk} "
            f"(states, one chunk's activations, and {_growing(model, length, chunk)}), over the budget of "
            f"{budget / 2**30:.1f} GiB (set HYBRIDS_EVAL_MEMORY_GB to change it)"
        )
    logits, targets, rows = [], [], []
    for first in range(0, batch, int(fits)):
        part = slice(first, min(first + int(fits), batch))
        x, y = inputs[part], labels[part]
        states = model.init_state(x.shape[0], max_len=length)
        part_logits, part_targets, part_rows = [], [], []
        for start in range(0, length, chunk):
            hidden, states = model.prefill_features(x[:, start : start + chunk], states)
            labelled = y[:, start : start + chunk] != IGNORE_INDEX  # (b, c)
            if labelled.any():
                where = labelled.nonzero()  # (n, 2): row, position within the chunk, row-major
                part_logits.append(model.logits(hidden[labelled]))
                part_targets.append(y[:, start : start + chunk][labelled])
                part_rows.append(where[:, 0] * length + start + where[:, 1])
        del states
        if part_logits:
            order = torch.cat(part_rows).argsort()  # chunk by chunk -> row-major, as a mask gives
            logits.append(torch.cat(part_logits)[order])
            targets.append(torch.cat(part_targets)[order])
            rows.append(torch.cat(part_rows)[order] // length + first)
    vocab = model.head.out_features
    if not logits:
        empty = torch.empty(0, dtype=torch.long, device=inputs.device)
        return inputs.new_empty((0, vocab), dtype=model.head.weight.dtype), empty, empty
    return torch.cat(logits), torch.cat(targets), torch.cat(rows)


def _growing(model, length: int, chunk: int) -> str:
    names = []
    for block in model.blocks:
        try:
            if block.mixer.state_size(length) > block.mixer.state_size(min(chunk, length)):
                names.append(type(block.mixer).__name__)
        except (AttributeError, StateSizeUnknown):
            names.append(type(block.mixer).__name__)
    if not names:
        return "no layer whose state grows with the length"
    return f"the (chunk x length) scores of {', '.join(dict.fromkeys(names))}"
