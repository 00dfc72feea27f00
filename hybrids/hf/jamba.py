"""Jamba (``JambaForCausalLM``, model_type "jamba"): Mamba layers with attention every
``attn_layer_period`` layers (from ``attn_layer_offset``) and a mixture of experts in place of
the MLP every ``expert_layer_period`` layers (from ``expert_layer_offset``), in the zoo's terms.

- the Mamba mixer is the zoo's :class:`~hybrids.mixers.Mamba` with ``ssm_input_norm_eps`` and
  ``ssm_input_norm_weights`` (Jamba's RMS norms, with weights, on dt, B and C);
- attention is :class:`~hybrids.mixers.Attention` without positions (Jamba has none), k and v
  packed into ``kv_proj``;
- the MLPs are SwiGLU, the MoE layers the zoo's ``moe`` with ``top_k`` of ``num_experts``, the
  chosen weights left unnormalised, the experts' weights stacked as the zoo's ``up`` (gate
  rows first) and ``down`` (from transformers' stacked tensors or the per-expert ones its
  ``save_pretrained`` writes), and ``router_aux_loss_coef`` as ``aux_loss``.
"""

from __future__ import annotations

from typing import Any

import torch

from hybrids.hf.names import ConversionError, Ledger, unsupported
from hybrids.model.config import StackConfig

MAMBA_WEIGHTS = ("A_log", "D", "conv1d.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
                 "out_proj.weight")
# Jamba's names of the dt, B and C norms' weights -> the zoo's.
NORMS = {"dt_layernorm.weight": "dt_norm", "b_layernorm.weight": "b_norm", "c_layernorm.weight": "c_norm"}


def _periodic(config: dict[str, Any], kind: str) -> tuple[int, int]:
    period, offset = config[f"{kind}_layer_period"], config[f"{kind}_layer_offset"]
    if not 0 <= offset < period:
        raise ConversionError(f"{kind}_layer_offset: {offset} must lie in [0, {kind}_layer_period = {period})")
    return period, offset


def stack_config(config: dict[str, Any]) -> StackConfig:
    unsupported(config, hidden_act=("silu",))
    d_model, n_layers = config["hidden_size"], config["num_hidden_layers"]
    a_period, a_offset = _periodic(config, "attn")
    e_period, e_offset = _periodic(config, "expert")
    heads = config["num_attention_heads"]
    eps = float(config.get("rms_norm_eps", 1e-6))
    dt_rank = config.get("mamba_dt_rank", "auto")
    mixers = {
        "M": {"class_path": "hybrids.mixers.Mamba", "init_args": {
            "d_state": config["mamba_d_state"], "d_conv": config["mamba_d_conv"], "expand": config["mamba_expand"],
            "dt_rank": dt_rank if dt_rank != "auto" else -(-d_model // 16),
            "conv_bias": bool(config.get("mamba_conv_bias", True)), "bias": bool(config.get("mamba_proj_bias", False)),
            "ssm_input_norm_eps": eps, "ssm_input_norm_weights": True}},
        "A": {"class_path": "hybrids.mixers.Attention", "init_args": {
            "heads": heads, "kv_heads": config.get("num_key_value_heads", 8), "rotary": False}},
    }
    pattern = "".join("A" if i % a_period == a_offset else "M" for i in range(n_layers))
    moe = None
    if config.get("num_experts", 1) > 1 and any(i % e_period == e_offset for i in range(n_layers)):
        moe = {"experts": config["num_experts"], "top_k": config["num_experts_per_tok"], "period": e_period,
               "offset": e_offset, "aux_loss": float(config.get("router_aux_loss_coef", 0.001)), "normalize": False}
    return StackConfig(
        vocab_size=config["vocab_size"],
        d_model=d_model,
        n_layers=n_layers,
        pattern=pattern,
        mixers={letter: spec for letter, spec in mixers.items() if letter in pattern},
        mlp="swiglu",
        mlp_expand=config["intermediate_size"] / d_model,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        norm_eps=eps,
        moe=moe,
    )


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    take = Ledger(hf_weights)
    stack = stack_config(config)
    experts = stack.moe is not None
    out = {"embedding.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.final_layernorm.weight")}
    for i, letter in enumerate(stack.pattern):
        hf, zoo = f"model.layers.{i}.", f"blocks.{i}."
        out[zoo + "mixer_norm.weight"] = take(hf + "input_layernorm.weight")
        out[zoo + "mlp_norm.weight"] = take(hf + "pre_ff_layernorm.weight")
        if letter == "M":
            m = hf + "mamba."
            names = list(MAMBA_WEIGHTS) + (["conv1d.bias"] if config.get("mamba_conv_bias", True) else [])
            names += ["in_proj.bias", "out_proj.bias"] if config.get("mamba_proj_bias", False) else []
            for name in names:
                out[zoo + "mixer." + name] = take(m + name)
            for theirs, ours in NORMS.items():
                out[zoo + "mixer." + ours] = take(m + theirs)
        else:
            a = hf + "self_attn."
            out[zoo + "mixer.q_proj.weight"] = take(a + "q_proj.weight")
            out[zoo + "mixer.kv_proj.weight"] = torch.cat([take(a + "k_proj.weight"), take(a + "v_proj.weight")])
            out[zoo + "mixer.out_proj.weight"] = take(a + "o_proj.weight")
        f = hf + "feed_forward."
        if experts and i % stack.moe["period"] == stack.moe["offset"]:
            out[zoo + "mlp.router.weight"] = take(f + "router.weight")
            out[zoo + "mlp.up"], out[zoo + "mlp.down"] = _experts(take, f + "experts.", stack.moe["experts"])
        else:
            out[zoo + "mlp.up.weight"] = torch.cat([take(f + "gate_proj.weight"), take(f + "up_proj.weight")])
            out[zoo + "mlp.down.weight"] = take(f + "down_proj.weight")
    out["head.weight"] = take.head("lm_head.weight", out["embedding.weight"], stack.tie_embeddings)
    take.finish()
    return out


def _experts(take: Ledger, prefix: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' stacked weights, (E, 2 hidden, d) gate rows first and (E, d, hidden), from
    transformers' stacked tensors or from the per-expert ones that save_pretrained writes
    (``experts.{e}.gate_proj`` / ``up_proj`` / ``down_proj``)."""
    if prefix + "gate_up_proj" in take.weights:
        return take(prefix + "gate_up_proj"), take(prefix + "down_proj")
    up = [torch.cat([take(f"{prefix}{e}.gate_proj.weight"), take(f"{prefix}{e}.up_proj.weight")]) for e in range(count)]
    down = [take(f"{prefix}{e}.down_proj.weight") for e in range(count)]
    return torch.stack(up), torch.stack(down)
