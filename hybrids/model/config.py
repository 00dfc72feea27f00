"""The architecture of a hybrid stack, defined once.

:class:`StackConfig` holds the arguments that describe a :class:`~hybrids.model.HybridLM` and
their defaults. ``HybridLM`` is built from it, and ``LanguageModel`` (the Lightning module) takes
it as its ``stack`` argument, which the CLI reads field by field (``--model.init_args.stack.d_model``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hybrids.model.blocks import GATES, MLP_KINDS
from hybrids.model.moe import MoEConfig
from hybrids.model.readout import READOUTS
from hybrids.errors import ConfigError, config_section



@dataclass(frozen=True)
class StackConfig:
    """A hybrid stack: embedding -> blocks whose mixers follow ``pattern`` -> norm -> LM head.

    Args:
        vocab_size: tokens of the vocabulary (the CLI takes it from the data module).
        d_model: model width.
        n_layers: number of blocks; None = ``len(pattern)``.
        pattern: one letter per layer, repeated (and cut) to ``n_layers``; e.g. ``"MMA"``.
        mixers: letter -> ``{class_path, init_args}`` spec of the mixer class for that letter;
            None = one attention mixer under ``"A"`` (:data:`DEFAULT_MIXERS`).
        mlp: the channel mixer after each mixer: gated ``"swiglu"``, ``"geglu"`` or ``"geglu_tanh"``
            (GELU's tanh approximation, as Gemma's), or a plain ``"gelu"`` MLP.
        mlp_expand: MLP hidden width as a multiple of ``d_model``; 0 leaves the MLP out.
        mlp_bias: biases in the MLP's projections.
        dropout: residual dropout, in [0, 1).
        tie_embeddings: share the embedding matrix with the LM head.
        reversible: reversible residual blocks (:mod:`hybrids.model.reversible`): two streams, and a
            backward pass that rebuilds each block's input from its output instead of keeping
            activations, so training memory stops growing with depth. Same parameters.
        norm_eps: the epsilon of every RMSNorm of the stack (the blocks' and the final one);
            None: torch's default, the machine epsilon of the input's dtype. Checkpoints from
            elsewhere state theirs (1e-5 in Hugging Face's Mamba, 1e-6 in Gemma's).
        embed_scale: the input embeddings are multiplied by it (Gemma's ``sqrt(d_model)``, rounded
            to bfloat16 as Gemma does); None leaves them as they are. The tied head reads the
            unscaled matrix.
        logit_soft_cap: logits become ``cap * tanh(logits / cap)`` (Gemma's soft-capping), in
            training and decoding alike; None leaves them uncapped.
        moe: a mixture of experts in place of the MLP of some blocks,
            ``{experts, top_k, period, offset, aux_loss, normalize}``
            (:class:`~hybrids.model.moe.MoEConfig`; its experts are MLPs of kind ``mlp`` and width
            ``mlp_expand * d_model``); None: dense MLPs everywhere.
        readout: what the head reads: ``"tokens"``, each position's hidden state (a language
            model); ``"last"``, an auto-encoder: the last position's hidden state, decoded by an
            MLP into every position (:mod:`hybrids.model.readout`; MAD's compression task). A
            ``"last"`` stack has no token-by-token decoding.
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int | None = 2
    pattern: str = "A"
    mixers: Mapping[str, Mapping[str, Any]] | None = None
    mlp: str = "swiglu"
    mlp_expand: float = 2.0
    mlp_bias: bool = False
    dropout: float = 0.0
    tie_embeddings: bool = True
    reversible: bool = False
    norm_eps: float | None = None
    embed_scale: float | None = None
    logit_soft_cap: float | None = None
    moe: Mapping[str, Any] | None = None
    readout: str = "tokens"

    # Errors are keyed as the CLI spells them: model.init_args.stack.<field>.
    @config_section("model", "stack")
    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.n_layers is not None and (not _is_int(self.n_layers) or self.n_layers <= 0):
            raise ConfigError("n_layers", f"must be a positive integer (or null for len(pattern)), got {self.n_layers!r}")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigError("pattern", f"must name at least one layer, e.g. 'A' or 'MA', got {self.pattern!r}")
        if self.mixers is not None and not isinstance(self.mixers, Mapping):
            raise ConfigError("mixers", f"must map pattern letters to mixer specs, got {self.mixers!r}")
        if self.mlp not in MLP_KINDS:
            raise ConfigError("mlp", f"unknown MLP {self.mlp!r}; use one of {MLP_KINDS}")
        if not _is_number(self.mlp_expand) or not 0 <= self.mlp_expand < float("inf"):
            raise ConfigError("mlp_expand", f"must be a finite number >= 0 (0 leaves the MLP out), got {self.mlp_expand!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError("tie_embeddings", f"must be true or false, got {self.tie_embeddings!r}")
        if not isinstance(self.reversible, bool):
            raise ConfigError("reversible", f"must be true or false, got {self.reversible!r}")
        if not isinstance(self.mlp_bias, bool):
            raise ConfigError("mlp_bias", f"must be true or false, got {self.mlp_bias!r}")
        for name in ("embed_scale", "logit_soft_cap"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not 0 < value < float("inf")):
                raise ConfigError(name, f"must be a finite number > 0 (or null to leave it out), got {value!r}")
        if self.moe is not None:
            if not isinstance(self.moe, Mapping):
                raise ConfigError("moe", f"must map fields to values, e.g. {{experts: 8, top_k: 2}}, got {self.moe!r}")
            try:
                moe = MoEConfig.of(self.moe)
            except ConfigError as err:
                raise ConfigError(f"moe.{err.key}", err.message) from None
            if self.mlp_expand == 0:
                raise ConfigError("moe", "experts are MLPs of width mlp_expand * d_model: mlp_expand must be > 0")
            if self.mlp_bias:
                raise ConfigError("moe", "the experts have no biases: mlp_bias must be false with moe")
            if self.reversible:
                # A reversible stack runs its blocks without a graph in the forward pass: the
                # load-balancing loss would reach the training loss as a constant.
                raise ConfigError("moe", "not with reversible: true (the load-balancing loss would get no gradient)")
            if self.mlp not in GATES:
                raise ConfigError("moe", f"experts are gated MLPs: mlp must be one of {sorted(GATES)}, got {self.mlp!r}")
            if self.n_layers is not None and not any(moe.applies_to(i) for i in range(self.n_layers)):
                raise ConfigError("moe", f"offset {moe.offset} leaves no block of {self.n_layers} with experts")
        if self.readout not in READOUTS:
            raise ConfigError("readout", f"must be one of {READOUTS}, got {self.readout!r}")
        if self.readout != "tokens" and self.reversible:
            raise ConfigError("readout", f"{self.readout!r} is not implemented for reversible stacks")
        if self.norm_eps is not None and (not _is_number(self.norm_eps) or not 0 < self.norm_eps < 1):
            raise ConfigError("norm_eps", f"must be a number in (0, 1) (or null for torch's default), got {self.norm_eps!r}")

    @property
    def mixer_specs(self) -> Mapping[str, Mapping[str, Any]]:
        return DEFAULT_MIXERS if self.mixers is None else self.mixers

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


DEFAULT_MIXERS: dict[str, dict[str, Any]] = {
    "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}},
}

# The fields that fix the shapes of the weights: a checkpoint's weights load only if they match.
ARCHITECTURE_KEYS = tuple(name for name in StackConfig.field_names() if name != "dropout")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
