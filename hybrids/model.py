"""The language-model stack: embedding -> blocks from a layer pattern -> norm -> LM head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybrids.blocks import MLP, Block
from hybrids.config import DEFAULT_MIXERS, StackConfig  # noqa: F401  (DEFAULT_MIXERS: re-exported)
from hybrids.errors import ConfigError, StateSizeUnknown
from hybrids.spec import build_mixer, expand_pattern

class HybridLM(nn.Module):
    """A stack of residual blocks whose mixers follow a layer pattern.

    Built from a :class:`~hybrids.config.StackConfig`, or from its arguments directly:
    ``HybridLM(StackConfig(vocab_size=50, d_model=16))`` and ``HybridLM(50, d_model=16)`` are the
    same model (see ``StackConfig`` for every argument and its default).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if len(args) == 1 and not kwargs and isinstance(args[0], StackConfig):
            config = args[0]
        else:
            config = StackConfig(*args, **kwargs)
        self.config = config
        mixers = config.mixer_specs
        self.layer_letters = expand_pattern(config.pattern, config.n_layers, mixers)
        d_model = config.d_model
        hidden = int(round(config.mlp_expand * d_model))

        self.embedding = nn.Embedding(config.vocab_size, d_model)
        blocks = []
        for letter in self.layer_letters:
            mixer = build_mixer(mixers[letter], d_model, key=f"mixers.{letter}")
            try:
                channel = MLP(d_model, hidden, config.mlp) if hidden > 0 else None
            except ValueError as err:
                raise ConfigError("mlp", str(err)) from err
            blocks.append(Block(d_model, mixer, channel, config.dropout))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, config.vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        if config.tie_embeddings:
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
                raise StateSizeUnknown(f"mixer of layer {i} ({type(block.mixer).__name__}) has no state_size(seq_len)")
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
