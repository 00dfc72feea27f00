"""Renaming a checkpoint's weights between transformers' names and the zoo's, with every tensor
accounted for: a name neither side knows is an error that lists it, never a silent drop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


class ConversionError(ValueError):
    """A checkpoint or stack the conversion cannot carry over; the message names the part."""


def unsupported(config: Mapping[str, Any], **allowed: Iterable[Any]) -> None:
    """Refuse a config whose ``key`` holds a value outside ``allowed[key]`` (absent keys pass)."""
    for key, values in allowed.items():
        values = tuple(values)
        if key in config and config[key] not in values:
            raise ConversionError(f"{key}: {config[key]!r} has no counterpart in the zoo (supported: {values})")


def integral(value: Any, key: str) -> int:
    """``value`` as an int where it is one (transformers 5's configs refuse ``2.0`` for an int
    field); a fraction has no counterpart."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConversionError(f"{key}: {value!r}; transformers takes an integer here")


@dataclass(frozen=True)
class NameMap:
    """transformers name -> zoo name for every weight but the LM head, whose transformers name is
    ``head``; a tied head is the embedding (absent from the checkpoint, or equal to it)."""

    pairs: Mapping[str, str]
    head: str
    tied: bool

    def to_zoo(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        take = Ledger(weights)
        out = {zoo: take(hf) for hf, zoo in self.pairs.items()}
        # The zoo's state dict lists the tied head too (the embedding itself).
        out["head.weight"] = take.head(self.head, out["embedding.weight"], self.tied)
        take.finish()
        return out

    def to_hf(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inverse = {zoo: hf for hf, zoo in self.pairs.items()}
        out = {inverse[name]: tensor for name, tensor in weights.items() if name in inverse}
        out[self.head] = weights["embedding.weight" if self.tied else "head.weight"]
        return out


def _listed(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def backbone_names(config: Mapping[str, Any], mixer_weights: Iterable[str]) -> NameMap:
    """The names of the Mamba-style models (``backbone.embeddings``, ``backbone.layers.{i}.norm``
    and ``.mixer.*``, ``backbone.norm_f``, ``lm_head``) mapped to the zoo's: every layer one
    pre-norm block whose mixer weights carry the same names on both sides."""
    mixer_weights = list(mixer_weights)
    pairs = {"backbone.embeddings.weight": "embedding.weight", "backbone.norm_f.weight": "norm.weight"}
    for i in range(config["num_hidden_layers"]):
        pairs[f"backbone.layers.{i}.norm.weight"] = f"blocks.{i}.mixer_norm.weight"
        for weight in mixer_weights:
            pairs[f"backbone.layers.{i}.mixer.{weight}"] = f"blocks.{i}.mixer.{weight}"
    return NameMap(pairs, head="lm_head.weight", tied=bool(config.get("tie_word_embeddings", True)))


class Ledger:
    """A checkpoint's tensors read by name, each read remembered: a conversion that builds its
    weights (concatenating, negating) reads through it and calls :meth:`finish`, which refuses
    the tensors nobody read, by name."""

    def __init__(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.weights, self.read = weights, set()

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.weights:
            raise ConversionError(f"the checkpoint's weights do not match its config: missing {name}")
        self.read.add(name)
        return self.weights[name]

    def optional(self, name: str) -> torch.Tensor | None:
        return self(name) if name in self.weights else None

    def head(self, name: str, embedding: torch.Tensor, tied: bool) -> torch.Tensor:
        """The LM head: the embedding when ``tied`` (the checkpoint's copy, if it keeps one, must
        equal it), else the checkpoint's ``name``."""
        head = self.optional(name)
        if tied:
            if head is not None and not torch.equal(head, embedding):
                raise ConversionError(f"tie_word_embeddings is true but {name} differs from the embedding")
            return embedding
        if head is None:
            raise ConversionError(f"tie_word_embeddings is false but the checkpoint has no {name}")
        return head

    def finish(self) -> None:
        unread = sorted(set(self.weights) - self.read)
        if unread:
            raise ConversionError("the checkpoint's weights do not match its config: not converted (no counterpart "
                                  f"in the zoo) {_listed(unread)}")
