"""The language-model stack: embedding -> blocks from a layer pattern -> norm -> LM head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hybrids.blocks import MLP, Block
from hybrids.errors import ConfigError
from hybrids.spec import build_mixer, expand_pattern

DEFAULT_MIXERS: dict[str, dict[str, Any]] = {
    "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}},
}


class HybridLM(nn.Module):
    """A stack of residual blocks whose mixers follow ``pattern``.

    Args:
        vocab_size: tokens of the vocabulary.
        d_model: model width.
        pattern: one letter per layer, repeated (and cut) to ``n_layers``; e.g. ``"MMA"``.
        mixers: letter -> ``{class_path, init_args}`` spec of the mixer class for that letter.
        n_layers: number of blocks; defaults to ``len(pattern)``.
        mlp: ``"swiglu"`` or ``"gelu"`` channel mixer after each mixer.
        mlp_expand: MLP hidden width as a multiple of ``d_model``; 0 leaves the MLP out.
        dropout: residual dropout.
        tie_embeddings: share the embedding matrix with the LM head.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        pattern: str = "A",
        mixers: Mapping[str, Mapping[str, Any]] | None = None,
        n_layers: int | None = None,
        mlp: str = "swiglu",
        mlp_expand: float = 2.0,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ConfigError("vocab_size", f"must be positive, got {vocab_size}")
        if d_model <= 0:
            raise ConfigError("d_model", f"must be positive, got {d_model}")
        if mlp_expand < 0:
            raise ConfigError("mlp_expand", f"must be >= 0 (0 leaves the MLP out), got {mlp_expand}")
        mixers = DEFAULT_MIXERS if mixers is None else mixers
        self.layer_letters = expand_pattern(pattern, n_layers, mixers)
        hidden = int(round(mlp_expand * d_model))

        self.embedding = nn.Embedding(vocab_size, d_model)
        blocks = []
        for letter in self.layer_letters:
            mixer = build_mixer(mixers[letter], d_model, key=f"mixers.{letter}")
            try:
                channel = MLP(d_model, hidden, mlp) if hidden > 0 else None
            except ValueError as err:
                raise ConfigError("mlp", str(err)) from err
            blocks.append(Block(d_model, mixer, channel, dropout))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        if tie_embeddings:
            self.head.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> logits (B, L, vocab_size)."""
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    # -- recurrent form -------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> list[Any]:
        """One empty mixer state per block."""
        return [block.mixer.init_state(batch_size) for block in self.blocks]

    def step(self, tokens: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """tokens (B,) -> logits (B, vocab_size) for the next token, and the updated states."""
        x = self.embedding(tokens)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state)
            new_states.append(state)
        return self.head(self.norm(x)), new_states

    def state_size(self, seq_len: int) -> int:
        """Total recurrent state elements per sequence after ``seq_len`` tokens (all layers)."""
        total = 0
        for i, block in enumerate(self.blocks):
            size = getattr(block.mixer, "state_size", None)
            if size is None:
                raise TypeError(f"mixer of layer {i} ({type(block.mixer).__name__}) has no state_size(seq_len)")
            total += size(seq_len)
        return total

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0) -> torch.Tensor:
        """Continue ``prompt`` (B, L0) by ``max_new_tokens`` through the recurrent form.

        ``temperature=0`` is greedy decoding. Returns (B, L0 + max_new_tokens).
        """
        if prompt.ndim != 2 or prompt.shape[1] == 0:
            raise ValueError(f"prompt must be (batch, L0) with L0 >= 1, got shape {tuple(prompt.shape)}")
        states = self.init_state(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, states = self.step(prompt[:, t], states)
        out = [prompt]
        for _ in range(max_new_tokens):
            if temperature > 0:
                token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)[:, 0]
            else:
                token = logits.argmax(dim=-1)
            out.append(token[:, None])
            logits, states = self.step(token, states)
        return torch.cat(out, dim=1)

    def num_parameters(self) -> int:
        """Parameters, counting a tied embedding once."""
        return sum(p.numel() for p in self.parameters())
