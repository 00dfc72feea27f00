"""The zoo's stacks in the transformers format (issue 28, point 3): ``export_hf(model, folder)``
writes ``config.json`` and ``model.safetensors`` that ``AutoModelForCausalLM.from_pretrained``
loads, for the stacks one of transformers' architectures expresses; any other is refused with a
line naming the part that has no counterpart.

Expressible: a pure Mamba stack (``MambaForCausalLM``; Falcon-Mamba's with
``ssm_input_norm_eps``) and a pure Mamba-2 stack (``Mamba2ForCausalLM``), without MLPs, embedding
scale or soft cap; Mamba-2 with attention and SwiGLU MLPs (``BambaForCausalLM``); Mamba with
Jamba's normed dt/B/C, attention without positions and SwiGLU or MoE MLPs (``JambaForCausalLM``;
:mod:`hybrids.hf.export_hybrids`); RG-LRU with local attention and GeGLU MLPs as RecurrentGemma.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hybrids.hf import mamba, mamba2
from hybrids.hf.names import ConversionError, integral
from hybrids.model.config import StackConfig

MAMBA, MAMBA2, ATTENTION = "hybrids.mixers.Mamba", "hybrids.mixers.Mamba2", "hybrids.mixers.Attention"
RGLRU = "hybrids.mixers.RGLRU"
# Runtime choices of the zoo's mixers that change no weight and no output.
RUNTIME = {"use_fast_path", "scan_backend", "kernel_backend"}
# Initialisation settings: they shape the weights' starting values only, not the function.
INIT = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "A_init_range"}


def _class(spec: dict[str, Any]) -> str:
    path = str(spec.get("class_path", ""))
    return {"hybrids.mixers.mamba.Mamba": MAMBA, "hybrids.mixers.mamba2.Mamba2": MAMBA2,
            "hybrids.mixers.attention.Attention": ATTENTION, "hybrids.mixers.rglru.RGLRU": RGLRU,
            "hybrids.mixers.sparse_attention.SparseAttention": "hybrids.mixers.SparseAttention"}.get(path, path)


def _plain_stack(stack: StackConfig) -> None:
    """Refuse what no pure Mamba / Mamba-2 model of transformers has, by name."""
    if stack.mlp_expand:
        raise ConversionError("mlp_expand: transformers' Mamba and Mamba-2 blocks have no MLP (set mlp_expand: 0)")
    for field in ("embed_scale", "logit_soft_cap", "moe"):
        if getattr(stack, field) is not None:
            raise ConversionError(f"{field}: transformers' Mamba and Mamba-2 have no counterpart")
    if stack.reversible:
        raise ConversionError("reversible: transformers has no reversible blocks")


def _eps(stack: StackConfig) -> float:
    # The zoo's None is torch's default for float32 weights: the dtype's machine epsilon.
    return stack.norm_eps if stack.norm_eps is not None else float(torch.finfo(torch.float32).eps)


def _mamba_config(stack: StackConfig, spec: dict[str, Any], d_model: int) -> tuple[str, dict[str, Any]]:
    args = dict(spec.get("init_args") or {})
    falcon = args.pop("ssm_input_norm_eps", None)
    if args.pop("ssm_input_norm_weights", False):
        raise ConversionError("mixers: Mamba with ssm_input_norm_weights (Jamba's normed dt, B, C) has no pure "
                              "transformers counterpart")
    dt_rank = args.get("dt_rank", "auto")
    config = {
        "vocab_size": stack.vocab_size, "hidden_size": d_model, "num_hidden_layers": stack.n_layers,
        "state_size": args.get("d_state", 16), "conv_kernel": args.get("d_conv", 4),
        "expand": integral(args.get("expand", 2), "mixers.expand"),
        "time_step_rank": -(-d_model // 16) if dt_rank == "auto" else dt_rank,
        "use_conv_bias": args.get("conv_bias", True), "use_bias": args.get("bias", False), "hidden_act": "silu",
        "layer_norm_epsilon": _eps(stack), "tie_word_embeddings": stack.tie_embeddings,
    }
    if falcon is not None:
        config["mixer_rms_eps"] = falcon
    leftover = sorted(set(args) - {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"} - RUNTIME - INIT)
    if leftover:
        raise ConversionError(f"mixers: Mamba's {leftover} have no transformers counterpart")
    return ("falcon_mamba" if falcon is not None else "mamba"), config


def _mamba2_config(stack: StackConfig, spec: dict[str, Any], d_model: int) -> tuple[str, dict[str, Any]]:
    args = dict(spec.get("init_args") or {})
    eps = _eps(stack)
    if abs(args.get("norm_eps", 1e-5) - eps) > 1e-12 * eps:
        raise ConversionError(f"norm_eps: transformers' Mamba-2 has one epsilon for the block norms and the gated "
                              f"norm; the stack's ({eps}) and the mixer's ({args.get('norm_eps', 1e-5)}) differ")
    d_inner = int(args.get("expand", 2) * d_model)
    headdim = args.get("headdim", 64)
    config = {
        "vocab_size": stack.vocab_size, "hidden_size": d_model, "num_hidden_layers": stack.n_layers,
        "state_size": args.get("d_state", 64), "conv_kernel": args.get("d_conv", 4),
        "expand": integral(args.get("expand", 2), "mixers.expand"),
        "head_dim": headdim, "num_heads": d_inner // headdim, "n_groups": args.get("ngroups", 1),
        "use_conv_bias": args.get("conv_bias", True), "use_bias": args.get("bias", False), "hidden_act": "silu",
        "layer_norm_epsilon": eps, "tie_word_embeddings": stack.tie_embeddings, "time_step_limit": [0.0, float("inf")],
    }
    leftover = sorted(set(args) - {"d_state", "d_conv", "expand", "headdim", "ngroups", "conv_bias", "bias", "norm_eps"}
                      - RUNTIME - INIT)
    if leftover:
        raise ConversionError(f"mixers: Mamba2's {leftover} have no transformers counterpart")
    return "mamba2", config


def hf_config(stack: StackConfig) -> tuple[str, dict[str, Any]]:
    """(model_type, config.json's fields) of the transformers architecture that expresses
    ``stack``; ConversionError naming the part that none does."""
    classes = {letter: _class(spec) for letter, spec in stack.mixer_specs.items() if letter in stack.pattern}
    kinds = set(classes.values())
    if len(kinds) != 1 or not kinds <= {MAMBA, MAMBA2}:
        others = sorted(kinds - {MAMBA, MAMBA2}) or sorted(kinds)
        raise ConversionError(f"mixers: {others}: transformers' architectures here hold Mamba or Mamba-2 layers, "
                              "alone or with Attention layers (Jamba, Bamba)")
    _plain_stack(stack)
    spec = next(stack.mixer_specs[letter] for letter in classes)
    specs = {repr(stack.mixer_specs[letter]) for letter in classes}
    if len(specs) != 1:
        raise ConversionError("mixers: layers with different settings; transformers' models repeat one layer")
    build = _mamba_config if kinds == {MAMBA} else _mamba2_config
    return build(stack, spec, stack.d_model)


def export_hf(model, folder: str | Path) -> Path:
    """Write ``model`` (a :class:`~hybrids.model.HybridLM`) to ``folder`` in the transformers
    format; returns the folder. The weights keep their dtype; a tied head is written once (as
    transformers ties it on loading)."""
    from safetensors.torch import save_file

    model_type, architecture, config, weights = export_parts(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {**config, "model_type": model_type, "architectures": [architecture]}
    if "time_step_limit" in body:  # JSON has no infinity: transformers 5's encoding of it
        body["time_step_limit"] = [0.0, {"__float__": "Infinity"}]
    # Written under temporary names and renamed once both exist: a failure leaves no half a model.
    partial = [folder / ".model.safetensors.partial", folder / ".config.json.partial"]
    try:
        save_file(weights, str(partial[0]), metadata={"format": "pt"})
        partial[1].write_text(json.dumps(body, indent=2))
        partial[0].replace(folder / "model.safetensors")
        partial[1].replace(folder / "config.json")
    finally:
        for path in partial:
            path.unlink(missing_ok=True)
    return folder


def export_parts(model) -> tuple[str, str, dict[str, Any], dict[str, torch.Tensor]]:
    """(model_type, architecture, config.json's fields, weights by transformers' names) of
    ``model``, or ConversionError naming the part without a counterpart; writes nothing."""
    stack = model.config
    if stack.reversible:  # same parameter names, another function: refused before anything else
        raise ConversionError("reversible: transformers has no reversible blocks")
    if stack.readout != "tokens":
        raise ConversionError(f"readout: {stack.readout!r} (an auto-encoder) has no counterpart in transformers' causal LMs")
    classes = {letter: _class(spec) for letter, spec in stack.mixer_specs.items() if letter in stack.pattern}
    for kind in set(classes.values()):
        specs = {json.dumps(stack.mixer_specs[letter].get("init_args") or {}, sort_keys=True, default=str)
                 for letter, c in classes.items() if c == kind}
        if len(specs) > 1:
            raise ConversionError(f"mixers: layers of {kind} with different settings; transformers' models repeat "
                                  "one layer of each kind")
    kinds = set(classes.values())
    if (len(kinds) > 1 and kinds <= {MAMBA, MAMBA2, ATTENTION}) or RGLRU in kinds:
        from hybrids.hf import export_hybrids

        build = (export_hybrids.recurrent_gemma if RGLRU in kinds else
                 export_hybrids.bamba if MAMBA2 in kinds else export_hybrids.jamba)
        model_type, architecture, config, weights = build(model, classes)
    else:
        model_type, config = hf_config(stack)
        family = {"mamba": mamba, "falcon_mamba": mamba, "mamba2": mamba2}[model_type]
        names = family.names(config)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        weights = names.to_hf(state)
        if names.tied:
            weights.pop(names.head, None)
        architecture = {"mamba": "MambaForCausalLM", "falcon_mamba": "FalconMambaForCausalLM",
                        "mamba2": "Mamba2ForCausalLM"}[model_type]
    return model_type, architecture, config, weights
