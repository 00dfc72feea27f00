"""RecurrentGemma (``RecurrentGemmaForCausalLM``, model_type "recurrent_gemma"): Griffin's
recurrent blocks and local attention in the pattern of ``block_types``, each followed by a gated
MLP, in the zoo's terms.

What the zoo's stack takes from it (docs/hf.md):

- the recurrent block is :class:`~hybrids.mixers.RGLRU` with ``heads`` block-diagonal gates,
  ``gate_activation: gelu_tanh``, ``unscaled_first_input`` (the first token's input is not
  scaled by ``sqrt(1 - a^2)``) and a negligible ``delta_floor``; its two input projections are the zoo's fused ``in_proj``
  (recurrent branch first), and ``recurrent_param`` is the zoo's ``-Lambda``;
- the attention is :class:`~hybrids.mixers.SparseAttention` with a window of
  ``attention_window_size`` keys, ``kv_heads`` (multi-query), half of each head rotating
  (``rotary_dim``) and a bias on the output projection only;
- the MLP is ``geglu_tanh`` with biases, ``intermediate_size / 2`` wide;
- Gemma's RMSNorm multiplies by ``1 + weight``: the zoo's norm weight is that sum;
- the embeddings are scaled by ``sqrt(hidden_size)`` rounded to bfloat16 (as transformers
  does), and the logits soft-capped at ``logits_soft_cap``.
"""

from __future__ import annotations

from typing import Any

import torch

from hybrids.hf.names import ConversionError, Ledger, unsupported
from hybrids.hf.rope import rope_settings
from hybrids.model.config import StackConfig

LETTERS = {"recurrent": "R", "attention": "A"}
# transformers' RG-LRU has no floor on -log a_t; the zoo's default (1e-6) changes the function
# where trained gates go below it. A normal float32 number keeps the scan path's division finite.
DELTA_FLOOR = 1e-30
ACTIVATIONS = {"gelu_pytorch_tanh": ("geglu_tanh", "gelu_tanh"), "gelu": ("geglu", "gelu")}


def stack_config(config: dict[str, Any]) -> StackConfig:
    unsupported(config, hidden_activation=tuple(ACTIVATIONS))
    block_types = list(config.get("block_types", ("recurrent", "recurrent", "attention")))
    unknown = sorted(set(block_types) - set(LETTERS))
    if unknown:
        raise ConversionError(f"block_types: {unknown} have no counterpart in the zoo (supported: {sorted(LETTERS)})")
    mlp, gate = ACTIVATIONS[config.get("hidden_activation", "gelu_pytorch_tanh")]
    d_model, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or d_model // heads
    theta, factor = rope_settings(config, default_factor=0.5)
    hidden = config["intermediate_size"] // 2
    mixers = {
        "R": {"class_path": "hybrids.mixers.RGLRU", "init_args": {
            "d_rnn": config.get("lru_width") or d_model, "d_conv": config.get("conv1d_width", 4), "heads": heads, "bias": True,
            "gate_activation": gate, "unscaled_first_input": True, "delta_floor": DELTA_FLOOR}},
        "A": {"class_path": "hybrids.mixers.SparseAttention", "init_args": {
            "heads": heads, "kv_heads": config.get("num_key_value_heads", heads), "head_dim": head_dim,
            "window": config["attention_window_size"], "rotary": True, "rotary_base": theta,
            "rotary_dim": int(head_dim * factor), "bias": bool(config.get("attention_bias", False)), "out_bias": True}},
    }
    return StackConfig(
        vocab_size=config["vocab_size"],
        d_model=d_model,
        n_layers=config["num_hidden_layers"],
        pattern="".join(LETTERS[t] for t in block_types),
        mixers=mixers,
        mlp=mlp,
        mlp_expand=hidden / d_model,
        mlp_bias=True,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        # transformers keeps the normaliser in bfloat16, whatever the model's dtype.
        embed_scale=float(torch.tensor(d_model**0.5, dtype=torch.bfloat16)),
        # transformers' default cap is 30 (a config without the key still caps).
        logit_soft_cap=float(config.get("logits_soft_cap", 30.0)) if config.get("logits_soft_cap", 30.0) else None,
    )


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    take = Ledger(hf_weights)
    stack = stack_config(config)
    letters = [stack.pattern[i % len(stack.pattern)] for i in range(config["num_hidden_layers"])]
    # Gemma's norms multiply by 1 + weight, computed in float32 by transformers whatever the stored
    # dtype: 1 + a bfloat16 weight in bfloat16 would lose most of the weight's digits.
    out = {"embedding.weight": take("model.embed_tokens.weight"), "norm.weight": 1 + take("model.final_norm.weight").float()}
    for i, letter in enumerate(letters):
        hf, zoo = f"model.layers.{i}.", f"blocks.{i}."
        out[zoo + "mixer_norm.weight"] = 1 + take(hf + "temporal_pre_norm.weight").float()
        out[zoo + "mlp_norm.weight"] = 1 + take(hf + "channel_pre_norm.weight").float()
        t, m = hf + "temporal_block.", zoo + "mixer."
        if letter == "R":
            out[m + "in_proj.weight"] = torch.cat([take(t + "linear_x.weight"), take(t + "linear_y.weight")])
            out[m + "in_proj.bias"] = torch.cat([take(t + "linear_x.bias"), take(t + "linear_y.bias")])
            out[m + "conv1d.weight"] = take(t + "conv_1d.weight")
            out[m + "conv1d.bias"] = take(t + "conv_1d.bias")
            out[m + "gate_a.weight"] = take(t + "rg_lru.recurrent_gate_weight")
            out[m + "gate_a.bias"] = take(t + "rg_lru.recurrent_gate_bias").flatten()
            out[m + "gate_x.weight"] = take(t + "rg_lru.input_gate_weight")
            out[m + "gate_x.bias"] = take(t + "rg_lru.input_gate_bias").flatten()
            out[m + "Lambda"] = -take(t + "rg_lru.recurrent_param")
            out[m + "out_proj.weight"] = take(t + "linear_out.weight")
            out[m + "out_proj.bias"] = take(t + "linear_out.bias")
        else:
            out[m + "q_proj.weight"] = take(t + "q_proj.weight")
            out[m + "kv_proj.weight"] = torch.cat([take(t + "k_proj.weight"), take(t + "v_proj.weight")])
            if config.get("attention_bias", False):
                out[m + "q_proj.bias"] = take(t + "q_proj.bias")
                out[m + "kv_proj.bias"] = torch.cat([take(t + "k_proj.bias"), take(t + "v_proj.bias")])
            out[m + "out_proj.weight"] = take(t + "o_proj.weight")
            out[m + "out_proj.bias"] = take(t + "o_proj.bias")
        p = hf + "mlp_block."
        out[zoo + "mlp.up.weight"] = torch.cat([take(p + "gate_proj.weight"), take(p + "up_proj.weight")])
        out[zoo + "mlp.up.bias"] = torch.cat([take(p + "gate_proj.bias"), take(p + "up_proj.bias")])
        out[zoo + "mlp.down.weight"] = take(p + "down_proj.weight")
        out[zoo + "mlp.down.bias"] = take(p + "down_proj.bias")
    out["head.weight"] = take.head("lm_head.weight", out["embedding.weight"], stack.tie_embeddings)
    take.finish()
    return out
