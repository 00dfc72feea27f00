"""Bamba (``BambaForCausalLM``, model_type "bamba"): Mamba-2 layers with attention at
``attn_layer_indices``, each followed by a SwiGLU MLP, in the zoo's terms.

The Mamba-2 mixer's weights carry the same names on both sides (as in :mod:`hybrids.hf.mamba2`);
attention's k and v projections are the zoo's packed ``kv_proj`` (k first), ``o_proj`` its
``out_proj``, and part of each head rotates (``partial_rotary_factor``); the MLP's gate and up
projections are the zoo's packed ``up`` (gate first).
"""

from __future__ import annotations

from typing import Any

import torch

from hybrids.hf.mamba2 import check_time_step_limit
from hybrids.hf.mamba2 import mixer_weights as mamba2_weights
from hybrids.hf.names import ConversionError, Ledger, unsupported
from hybrids.hf.rope import rope_settings
from hybrids.model.config import StackConfig


def _mamba2_flags(config: dict[str, Any]) -> dict[str, Any]:
    """Bamba's mamba_* keys under the names hybrids.hf.mamba2 reads."""
    return {"use_conv_bias": config.get("mamba_conv_bias", True), "use_bias": config.get("mamba_proj_bias", False)}


def stack_config(config: dict[str, Any]) -> StackConfig:
    unsupported(config, hidden_act=("silu",))
    check_time_step_limit(config)
    d_model, n_layers = config["hidden_size"], config["num_hidden_layers"]
    d_inner = int(config.get("mamba_expand", 2) * d_model)
    heads, head_dim = config["mamba_n_heads"], config["mamba_d_head"]
    if heads * head_dim != d_inner:
        raise ConversionError(f"mamba_n_heads: {heads} heads of mamba_d_head {head_dim} do not fill "
                              f"mamba_expand * hidden_size = {d_inner}")
    attention_layers = set(config.get("attn_layer_indices") or [])
    outside = sorted(i for i in attention_layers if not 0 <= i < n_layers)
    if outside:
        raise ConversionError(f"attn_layer_indices: {outside} are not layers of a {n_layers}-layer model")
    a_heads = config["num_attention_heads"]
    a_head_dim = config.get("head_dim") or d_model // a_heads
    theta, factor = rope_settings(config, default_factor=0.5)
    eps = float(config.get("rms_norm_eps", 1e-5))
    mixers = {
        "M": {"class_path": "hybrids.mixers.Mamba2", "init_args": {
            "d_state": config["mamba_d_state"], "d_conv": config.get("mamba_d_conv", 4),
            "expand": config.get("mamba_expand", 2), "headdim": head_dim, "ngroups": config.get("mamba_n_groups", 1),
            "conv_bias": bool(config.get("mamba_conv_bias", True)), "bias": bool(config.get("mamba_proj_bias", False)),
            "norm_eps": eps}},
        "A": {"class_path": "hybrids.mixers.Attention", "init_args": {
            "heads": a_heads, "kv_heads": config.get("num_key_value_heads", 8), "head_dim": a_head_dim,
            "rotary": True, "rotary_base": theta, "rotary_dim": int(a_head_dim * factor),
            "bias": bool(config.get("attention_bias", False))}},
    }
    pattern = "".join("A" if i in attention_layers else "M" for i in range(n_layers))
    used = {letter: spec for letter, spec in mixers.items() if letter in pattern}
    return StackConfig(
        vocab_size=config["vocab_size"],
        d_model=d_model,
        n_layers=n_layers,
        pattern=pattern,
        mixers=used,
        mlp="swiglu",
        mlp_expand=config["intermediate_size"] / d_model,
        mlp_bias=bool(config.get("mlp_bias", False)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        norm_eps=eps,
    )


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    take = Ledger(hf_weights)
    stack = stack_config(config)
    out = {"embedding.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.final_layernorm.weight")}
    attention_bias, mlp_bias = bool(config.get("attention_bias", False)), bool(config.get("mlp_bias", False))
    for i, letter in enumerate(stack.pattern):
        hf, zoo = f"model.layers.{i}.", f"blocks.{i}."
        out[zoo + "mixer_norm.weight"] = take(hf + "input_layernorm.weight")
        out[zoo + "mlp_norm.weight"] = take(hf + "pre_ff_layernorm.weight")
        if letter == "M":
            for name in mamba2_weights(_mamba2_flags(config)):
                out[zoo + "mixer." + name] = take(hf + "mamba." + name)
        else:
            a, m = hf + "self_attn.", zoo + "mixer."
            out[m + "q_proj.weight"] = take(a + "q_proj.weight")
            out[m + "kv_proj.weight"] = torch.cat([take(a + "k_proj.weight"), take(a + "v_proj.weight")])
            out[m + "out_proj.weight"] = take(a + "o_proj.weight")
            if attention_bias:
                out[m + "q_proj.bias"] = take(a + "q_proj.bias")
                out[m + "kv_proj.bias"] = torch.cat([take(a + "k_proj.bias"), take(a + "v_proj.bias")])
                out[m + "out_proj.bias"] = take(a + "o_proj.bias")
        f = hf + "feed_forward."
        out[zoo + "mlp.up.weight"] = torch.cat([take(f + "gate_proj.weight"), take(f + "up_proj.weight")])
        out[zoo + "mlp.down.weight"] = take(f + "down_proj.weight")
        if mlp_bias:
            out[zoo + "mlp.up.bias"] = torch.cat([take(f + "gate_proj.bias"), take(f + "up_proj.bias")])
            out[zoo + "mlp.down.bias"] = take(f + "down_proj.bias")
    out["head.weight"] = take.head("lm_head.weight", out["embedding.weight"], stack.tie_embeddings)
    take.finish()
    return out
