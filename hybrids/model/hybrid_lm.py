"""The language-model stack: embedding -> blocks from a layer pattern -> norm -> LM head."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from hybrids.model.blocks import MLP, Block
from hybrids.model.moe import MoE, MoEConfig
from hybrids.model.readout import PooledDecoder
from hybrids.model.config import DEFAULT_MIXERS, StackConfig  # noqa: F401  (DEFAULT_MIXERS: re-exported)
from hybrids.errors import ConfigError, StateSizeUnknown
from hybrids.model.reversible import ReversibleBlock, reversible_stack
from hybrids.model.sampling import check_sampling, next_token
from hybrids.model.state_carry import detach_state
from hybrids.model.mixer_specs import build_mixer, expand_pattern
from hybrids.model.size_check import check_stack_fits

class HybridLM(nn.Module):
    """A stack of residual blocks whose mixers follow a layer pattern.

    Built from a :class:`~hybrids.model.config.StackConfig`, or from its arguments directly:
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
        check_stack_fits(config)  # before any weight is allocated
        self.layer_letters = expand_pattern(config.pattern, config.n_layers, mixers)
        d_model = config.d_model
        hidden = int(round(config.mlp_expand * d_model))

        self.embedding = nn.Embedding(config.vocab_size, d_model)
        block_class = ReversibleBlock if config.reversible else Block
        moe = MoEConfig.of(config.moe) if config.moe is not None else None
        blocks = []
        for letter in self.layer_letters:
            mixer = build_mixer(mixers[letter], d_model, key=f"mixers.{letter}")
            try:
                if moe is not None and moe.applies_to(len(blocks)):
                    channel = MoE(d_model, hidden, moe.experts, moe.top_k, config.mlp, moe.normalize)
                else:
                    channel = MLP(d_model, hidden, config.mlp, config.mlp_bias) if hidden > 0 else None
            except ValueError as err:
                raise ConfigError("mlp", str(err)) from err
            blocks.append(block_class(d_model, mixer, channel, config.dropout, config.norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.RMSNorm(d_model, eps=config.norm_eps)
        # An auto-encoder's decoder from the last position (readout "last"); None for an LM.
        self.decoder = PooledDecoder(d_model, config.norm_eps) if config.readout == "last" else None
        self.head = nn.Linear(d_model, config.vocab_size, bias=False)
        # Rows of norm ~1 (std 1/sqrt(d)), so that the tied head's logits start at std ~1 at
        # every width and AdamW's steps (of size ~lr per element) move the embedding by a small
        # fraction of itself. The fixed std 0.02 it replaces gave logits of std 0.02 sqrt(d) and
        # steps of lr / 0.02 (15% at lr 3e-3) of every element: attention on MQAR then sat at
        # chance for a long, seed-dependent time at d_model 128 (never left it in some runs).
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> logits (B, L, vocab_size)."""
        return self.logits(self.features(tokens))

    def moe_aux_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of the last forward, averaged over the MoE layers
        (:mod:`hybrids.model.moe`); None for a stack without experts."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE) and m.aux_loss is not None]
        return torch.stack(losses).mean() if losses else None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (...) int64 -> input embeddings (..., d_model), scaled by ``embed_scale``."""
        x = self.embedding(tokens)
        scale = self.config.embed_scale
        return x if scale is None else x * torch.tensor(scale, dtype=x.dtype, device=x.device)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Normalised hidden states (..., d_model) -> logits (..., vocab_size): the LM head, then
        ``logit_soft_cap`` where set. Every path to logits (training on labelled positions
        included) goes through here."""
        logits = self.head(hidden)
        cap = self.config.logit_soft_cap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> the normalised last hidden states (B, L, d_model), which the
        LM head maps to logits. Training on sparse labels (MQAR labels a few positions per
        example) applies the head to the labelled positions only: with a large vocabulary the
        (B, L, vocab) logits are most of the step's cost."""
        x = self._enter(self.embed(tokens))
        if self.config.reversible:
            x = reversible_stack(x, self.blocks)
        else:
            for block in self.blocks:
                x = block(x)
        hidden = self._leave(x)
        if self.decoder is not None:
            if tokens.shape[1] == 0:
                raise ValueError("tokens: an auto-encoder stack (readout 'last') needs at least one token to read its code from")
            return self.decoder(hidden[:, -1], tokens.shape[1])
        return hidden

    def _enter(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (..., d_model) -> the blocks' input: both streams of a reversible stack."""
        return torch.cat([x, x], dim=-1) if self.config.reversible else x

    def _leave(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks' output -> the normalised features (..., d_model): a reversible stack's
        two streams are averaged."""
        if self.config.reversible:
            x1, x2 = x.chunk(2, dim=-1)
            x = (x1 + x2) / 2
        return self.norm(x)

    # -- recurrent form -------------------------------------------------------------------------

    def _check_token_readout(self) -> None:
        if self.decoder is not None:
            raise ValueError("readout: an auto-encoder stack (readout 'last') decodes a whole sequence from its last "
                             "position; it has no token-by-token form (prefill, step, generate)")

    def init_state(self, batch_size: int, max_len: int | None = None) -> list[Any]:
        """One empty mixer state per block; ``max_len`` (the prompt plus the tokens to generate)
        lets mixers whose state grows (attention's KV cache) allocate it once."""
        self._check_token_readout()
        states = []
        for block in self.blocks:
            init = block.mixer.init_state
            takes_max_len = max_len is not None and "max_len" in inspect.signature(init).parameters
            states.append(init(batch_size, max_len=max_len) if takes_max_len else init(batch_size))
        return states

    def step(self, tokens: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """tokens (B,) -> logits (B, vocab_size) for the next token, and the updated states."""
        x = self._enter(self.embed(tokens))
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state)
            new_states.append(state)
        return self.logits(self._leave(x)), new_states

    def state_size(self, seq_len: int) -> int:
        """Total recurrent state elements per sequence after ``seq_len`` tokens (all layers)."""
        total = 0
        for i, block in enumerate(self.blocks):
            size = getattr(block.mixer, "state_size", None)
            if size is None:
                raise StateSizeUnknown(f"mixer of layer {i} ({type(block.mixer).__name__}) has no state_size(seq_len)")
            total += size(seq_len)
        return total

    def prefill(self, tokens: torch.Tensor, states: list[Any] | None = None) -> tuple[torch.Tensor, list[Any]]:
        """tokens (B, L) -> logits (B, L, vocab_size) and every layer's state after them, each
        mixer running its parallel path; continues from ``states`` if given (chunked prefill)."""
        hidden, new_states = self.prefill_features(tokens, states)
        return self.logits(hidden), new_states

    def prefill_features(
        self, tokens: torch.Tensor, states: list[Any] | None = None
    ) -> tuple[torch.Tensor, list[Any]]:
        """:meth:`prefill` without the LM head: the normalised hidden states (B, L, d_model) and
        every layer's state (long-context evaluation applies the head to labelled positions only)."""
        self._check_token_readout()
        x = self._enter(self.embed(tokens))
        states = [None] * len(self.blocks) if states is None else states
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block.prefill(x, state)
            new_states.append(state)
        return self._leave(x), new_states

    def segment_features(
        self, tokens: torch.Tensor, states: list[Any], carry: list[bool]
    ) -> tuple[torch.Tensor, list[Any]]:
        """One segment of a document per slot (:mod:`hybrids.model.state_carry`): tokens (B, T) -> the
        normalised hidden states (B, T, d_model) and the new states, detached. Layer i continues
        from ``states[i]`` (None: empty) where ``carry[i]``, else runs its plain forward (and its
        new state is None)."""
        if self.config.reversible:
            raise ValueError("reversible: a reversible stack cannot carry states across segments (it only has a forward pass)")
        self._check_token_readout()
        x = self.embed(tokens)
        new_states = []
        for block, state, carries in zip(self.blocks, states, carry):
            if carries:
                x, state = block.prefill(x, state)
                new_states.append(detach_state(state))
            else:
                x = block(x)
                new_states.append(None)
        return self._leave(x), new_states

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token: int | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, L0) of equal-length prompts by up to ``max_new_tokens`` tokens.

        The prompt is prefilled in parallel (:meth:`prefill`), then each new token is one
        :meth:`step`. ``temperature=0`` is greedy decoding; otherwise tokens are sampled (see
        :func:`hybrids.model.sampling.next_token` for ``top_k`` / ``top_p``) from a generator seeded
        with ``seed``, so a seed gives the same continuation every time. A sequence that emits
        ``eos_token`` is finished: the positions after it hold ``eos_token``, and generation stops
        when every sequence is finished. Returns (B, L0 + n), n <= max_new_tokens.
        """
        check_sampling(temperature, top_k, top_p)
        if prompt.ndim != 2 or prompt.shape[0] == 0 or prompt.shape[1] == 0:
            raise ValueError(f"prompt: must be (batch, L0) with batch >= 1 and L0 >= 1, "
                             f"got shape {tuple(prompt.shape)}")
        if prompt.is_floating_point() or prompt.is_complex():
            raise TypeError(f"prompt: expected integer token ids, got {prompt.dtype}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: must be an integer >= 0, got {max_new_tokens!r}")
        vocab = self.config.vocab_size
        # An id the head never produces would never end a sequence: refused rather than ignored.
        if eos_token is not None and (isinstance(eos_token, bool) or not isinstance(eos_token, int)
                                      or not 0 <= eos_token < vocab):
            raise ValueError(f"eos_token: must be a token id in [0, {vocab}) (or None), got {eos_token!r}")
        # The range torch.Generator.manual_seed takes; beyond it torch's own report names no argument.
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64):
            raise ValueError(f"seed: must be an integer in [-2**63, 2**64) (or None), got {seed!r}")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=prompt.device).manual_seed(seed)
        # Caches sized for the whole decode up front: no reallocation while generating.
        logits, states = self.prefill(prompt, self.init_state(prompt.shape[0], prompt.shape[1] + max_new_tokens))
        logits = logits[:, -1]
        out = [prompt]
        finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        for _ in range(max_new_tokens):
            token = next_token(logits, temperature, top_k, top_p, generator)
            if eos_token is not None:
                token = torch.where(finished, torch.full_like(token, eos_token), token)
                finished |= token == eos_token
            out.append(token[:, None])
            if eos_token is not None and bool(finished.all()):
                break
            logits, states = self.step(token, states)
        return torch.cat(out, dim=1)

    def num_parameters(self) -> int:
        """Parameters, counting a tied embedding once."""
        return sum(p.numel() for p in self.parameters())
