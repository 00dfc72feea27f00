"""Export of the zoo's hybrid stacks to transformers' hybrid architectures (used by
:mod:`hybrids.hf.export`): Mamba-2 + attention + SwiGLU as Bamba, Mamba with Jamba's normed
dt/B/C + attention without positions + SwiGLU / MoE as Jamba. Each builder returns the
model_type, the architecture, config.json's fields and the weights under transformers' names,
or raises ConversionError naming the part without a counterpart."""

from __future__ import annotations

from typing import Any

import torch

from hybrids.hf.names import ConversionError, integral

MAMBA, MAMBA2, ATTENTION = "hybrids.mixers.Mamba", "hybrids.mixers.Mamba2", "hybrids.mixers.Attention"


def _args(stack, letter: str) -> dict[str, Any]:
    return dict(stack.mixer_specs[letter].get("init_args") or {})


def _swiglu(stack) -> int:
    """The MLP width of a SwiGLU stack with MLPs (what both architectures have)."""
    if stack.mlp != "swiglu" or not stack.mlp_expand:
        raise ConversionError(f"mlp: transformers' Bamba and Jamba have SwiGLU MLPs; got {stack.mlp!r} with "
                              f"mlp_expand {stack.mlp_expand}")
    for field in ("embed_scale", "logit_soft_cap"):
        if getattr(stack, field) is not None:
            raise ConversionError(f"{field}: transformers' Bamba and Jamba have no counterpart")
    return int(round(stack.mlp_expand * stack.d_model))


def _attention(stack, letter: str, rotary: bool) -> dict[str, Any]:
    args = _args(stack, letter)
    heads = args.get("heads", 4)
    if args.get("head_dim") not in (None, stack.d_model // heads) or stack.d_model % heads:
        raise ConversionError(f"mixers.{letter}.head_dim: transformers' attention here has head_dim = hidden_size / heads")
    if args.get("out_bias") not in (None, args.get("bias", False)):
        raise ConversionError(f"mixers.{letter}.out_bias: one bias setting for every projection in transformers")
    if bool(args.get("rotary", True)) != rotary:
        raise ConversionError(f"mixers.{letter}.rotary: must be {rotary} here (Jamba's attention has no positions, "
                              "Bamba's rotates)")
    return args


def _split_kv(state: dict[str, torch.Tensor], prefix: str, out: dict[str, torch.Tensor], hf: str) -> None:
    k, v = state[prefix + "kv_proj.weight"].chunk(2)
    out[hf + "q_proj.weight"], out[hf + "k_proj.weight"], out[hf + "v_proj.weight"] = state[prefix + "q_proj.weight"], k, v
    out[hf + "o_proj.weight"] = state[prefix + "out_proj.weight"]
    if prefix + "q_proj.bias" in state:
        kb, vb = state[prefix + "kv_proj.bias"].chunk(2)
        out[hf + "q_proj.bias"], out[hf + "k_proj.bias"], out[hf + "v_proj.bias"] = state[prefix + "q_proj.bias"], kb, vb
        out[hf + "o_proj.bias"] = state[prefix + "out_proj.bias"]


def _dense_mlp(state, zoo: str, out, hf: str) -> None:
    gate, up = state[zoo + "mlp.up.weight"].chunk(2)
    out[hf + "gate_proj.weight"], out[hf + "up_proj.weight"] = gate, up
    out[hf + "down_proj.weight"] = state[zoo + "mlp.down.weight"]
    if zoo + "mlp.up.bias" in state:
        gb, ub = state[zoo + "mlp.up.bias"].chunk(2)
        out[hf + "gate_proj.bias"], out[hf + "up_proj.bias"] = gb, ub
        out[hf + "down_proj.bias"] = state[zoo + "mlp.down.bias"]


def _common(stack, state, out, final: str) -> None:
    out["model.embed_tokens.weight"] = state["embedding.weight"]
    out[final] = state["norm.weight"]
    if not stack.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"]


def bamba(model, classes: dict[str, str]) -> tuple[str, str, dict[str, Any], dict[str, torch.Tensor]]:
    stack, letters = model.config, model.layer_letters
    if set(classes.values()) != {MAMBA2, ATTENTION} and set(classes.values()) != {MAMBA2}:
        raise ConversionError("mixers: Bamba is Mamba2 layers with Attention layers")
    if stack.moe is not None:
        raise ConversionError("moe: transformers' Bamba has no experts")
    hidden = _swiglu(stack)
    m = next(letter for letter, c in classes.items() if c == MAMBA2)
    margs = _args(stack, m)
    eps = stack.norm_eps if stack.norm_eps is not None else float(torch.finfo(torch.float32).eps)
    if abs(margs.get("norm_eps", 1e-5) - eps) > 1e-12 * eps:
        raise ConversionError("norm_eps: transformers' Bamba has one epsilon for the block norms and Mamba2's gated norm")
    d_inner = int(margs.get("expand", 2) * stack.d_model)
    config: dict[str, Any] = {
        "vocab_size": stack.vocab_size, "hidden_size": stack.d_model, "num_hidden_layers": len(letters),
        "intermediate_size": hidden, "hidden_act": "silu", "rms_norm_eps": eps, "tie_word_embeddings": stack.tie_embeddings,
        "mlp_bias": stack.mlp_bias, "attn_layer_indices": [i for i, x in enumerate(letters) if classes[x] == ATTENTION],
        "mamba_n_heads": d_inner // margs.get("headdim", 64), "mamba_d_head": margs.get("headdim", 64),
        "mamba_n_groups": margs.get("ngroups", 1), "mamba_d_state": margs.get("d_state", 64),
        "mamba_d_conv": margs.get("d_conv", 4), "mamba_expand": integral(margs.get("expand", 2), f"mixers.{m}.expand"),
        "mamba_conv_bias": margs.get("conv_bias", True), "mamba_proj_bias": margs.get("bias", False),
        "time_step_limit": [0.0, float("inf")],
    }
    a = next((letter for letter, c in classes.items() if c == ATTENTION), None)
    if a is not None:
        aargs = _attention(stack, a, rotary=True)
        head_dim = stack.d_model // aargs.get("heads", 4)
        config.update(num_attention_heads=aargs.get("heads", 4), num_key_value_heads=aargs.get("kv_heads") or aargs.get("heads", 4),
                      attention_bias=bool(aargs.get("bias", False)),
                      rope_parameters={"rope_type": "default", "rope_theta": float(aargs.get("rotary_base", 10000.0)),
                                       "partial_rotary_factor": (aargs.get("rotary_dim") or head_dim) / head_dim})
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    _common(stack, state, out, "model.final_layernorm.weight")
    for i, letter in enumerate(letters):
        zoo, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = state[zoo + "mixer_norm.weight"]
        out[hf + "pre_ff_layernorm.weight"] = state[zoo + "mlp_norm.weight"]
        if classes[letter] == MAMBA2:
            for name, tensor in state.items():
                if name.startswith(zoo + "mixer."):
                    out[hf + "mamba." + name[len(zoo + "mixer."):]] = tensor
        else:
            _split_kv(state, zoo + "mixer.", out, hf + "self_attn.")
        _dense_mlp(state, zoo, out, hf + "feed_forward.")
    return "bamba", "BambaForCausalLM", config, out


def _period(indices: list[int], n_layers: int, what: str) -> tuple[int, int]:
    """(period, offset) with ``i % period == offset`` exactly at ``indices`` among ``n_layers``."""
    if not indices:
        raise ConversionError(f"{what}: Jamba needs at least one such layer")
    period = indices[1] - indices[0] if len(indices) > 1 else n_layers
    offset = indices[0]
    if offset >= period or [i for i in range(n_layers) if i % period == offset] != indices:
        raise ConversionError(f"{what}: at layers {indices}, not every {period} layers from {offset} as Jamba places them")
    return period, offset


def jamba(model, classes: dict[str, str]) -> tuple[str, str, dict[str, Any], dict[str, torch.Tensor]]:
    stack, letters = model.config, model.layer_letters
    if set(classes.values()) != {MAMBA, ATTENTION}:
        raise ConversionError("mixers: Jamba is Mamba layers with Attention layers")
    hidden = _swiglu(stack)
    m = next(letter for letter, c in classes.items() if c == MAMBA)
    margs = _args(stack, m)
    eps = stack.norm_eps if stack.norm_eps is not None else float(torch.finfo(torch.float32).eps)
    if not margs.get("ssm_input_norm_weights") or abs(margs.get("ssm_input_norm_eps") - eps) > 1e-12 * eps:
        raise ConversionError("mixers: Jamba's Mamba has weighted norms on dt, B and C (ssm_input_norm_weights) with "
                              "the block norms' epsilon (ssm_input_norm_eps = norm_eps)")
    a = next(letter for letter, c in classes.items() if c == ATTENTION)
    aargs = _attention(stack, a, rotary=False)
    if aargs.get("bias"):
        raise ConversionError(f"mixers.{a}.bias: Jamba's attention has no biases")
    a_period, a_offset = _period([i for i, x in enumerate(letters) if classes[x] == ATTENTION], len(letters), "attention")
    config: dict[str, Any] = {
        "vocab_size": stack.vocab_size, "hidden_size": stack.d_model, "num_hidden_layers": len(letters),
        "intermediate_size": hidden, "hidden_act": "silu", "rms_norm_eps": eps, "tie_word_embeddings": stack.tie_embeddings,
        "num_attention_heads": aargs.get("heads", 4), "num_key_value_heads": aargs.get("kv_heads") or aargs.get("heads", 4),
        "attn_layer_period": a_period, "attn_layer_offset": a_offset,
        "mamba_d_state": margs.get("d_state", 16), "mamba_d_conv": margs.get("d_conv", 4),
        "mamba_expand": integral(margs.get("expand", 2), f"mixers.{m}.expand"),
        "mamba_dt_rank": margs["dt_rank"] if margs.get("dt_rank", "auto") != "auto" else -(-stack.d_model // 16),
        "mamba_conv_bias": margs.get("conv_bias", True), "mamba_proj_bias": margs.get("bias", False),
        "num_experts": 1, "num_experts_per_tok": 1, "expert_layer_period": 1, "expert_layer_offset": 0,
    }
    if stack.mlp_bias:
        raise ConversionError("mlp_bias: Jamba's MLPs have no biases")
    moe = None
    if stack.moe is not None:
        from hybrids.model.moe import MoEConfig

        moe = MoEConfig.of(stack.moe)
        if moe.normalize:
            raise ConversionError("moe.normalize: Jamba leaves the chosen experts' weights unnormalised")
        if moe.offset >= moe.period:
            raise ConversionError(f"moe.offset: Jamba places experts at layer % period == offset < period, got {moe.offset}")
        config.update(num_experts=moe.experts, num_experts_per_tok=moe.top_k, expert_layer_period=moe.period,
                      expert_layer_offset=moe.offset, router_aux_loss_coef=moe.aux_loss)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    _common(stack, state, out, "model.final_layernorm.weight")
    norms = {"dt_norm": "dt_layernorm.weight", "b_norm": "b_layernorm.weight", "c_norm": "c_layernorm.weight"}
    for i, letter in enumerate(letters):
        zoo, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = state[zoo + "mixer_norm.weight"]
        out[hf + "pre_ff_layernorm.weight"] = state[zoo + "mlp_norm.weight"]
        if classes[letter] == MAMBA:
            for name, tensor in state.items():
                if name.startswith(zoo + "mixer."):
                    short = name[len(zoo + "mixer."):]
                    out[hf + "mamba." + norms.get(short, short)] = tensor
        else:
            _split_kv(state, zoo + "mixer.", out, hf + "self_attn.")
        f = hf + "feed_forward."
        if moe is not None and moe.applies_to(i):
            out[f + "router.weight"] = state[zoo + "mlp.router.weight"]
            out[f + "experts.gate_up_proj"] = state[zoo + "mlp.up"]
            out[f + "experts.down_proj"] = state[zoo + "mlp.down"]
        else:
            _dense_mlp(state, zoo, out, f)
    return "jamba", "JambaForCausalLM", config, out


RGLRU, SPARSE = "hybrids.mixers.RGLRU", "hybrids.mixers.SparseAttention"


def recurrent_gemma(model, classes: dict[str, str]) -> tuple[str, str, dict[str, Any], dict[str, torch.Tensor]]:
    """RG-LRU blocks and local attention as RecurrentGemma (the inverse of hybrids.hf.recurrent_gemma)."""
    from hybrids.hf.recurrent_gemma import DELTA_FLOOR, LETTERS

    stack, letters = model.config, model.layer_letters
    if not set(classes.values()) <= {RGLRU, SPARSE} or RGLRU not in classes.values():
        raise ConversionError("mixers: RecurrentGemma is RGLRU layers with SparseAttention (local) layers")
    if stack.mlp != "geglu_tanh" or not stack.mlp_bias or not stack.mlp_expand:
        raise ConversionError("mlp: RecurrentGemma's MLPs are geglu_tanh with biases (mlp_bias: true)")
    if stack.logit_soft_cap is None:
        raise ConversionError("logit_soft_cap: RecurrentGemma always soft-caps its logits; set one (30 in its checkpoints)")
    expected_scale = float(torch.tensor(stack.d_model**0.5, dtype=torch.bfloat16))
    if stack.embed_scale != expected_scale:
        raise ConversionError(f"embed_scale: RecurrentGemma scales embeddings by sqrt(hidden_size) in bfloat16, "
                              f"{expected_scale}; got {stack.embed_scale}")
    if stack.moe is not None:
        raise ConversionError("moe: RecurrentGemma has no experts")
    r = next(letter for letter, c in classes.items() if c == RGLRU)
    rargs = _args(stack, r)
    wanted = {"bias": True, "gate_activation": "gelu_tanh", "unscaled_first_input": True, "c": 8.0}
    for key, value in wanted.items():
        if rargs.get(key, {"bias": True, "gate_activation": "gelu", "unscaled_first_input": False, "c": 8.0}[key]) != value:
            raise ConversionError(f"mixers.{r}.{key}: RecurrentGemma's RG-LRU has {key} = {value!r}")
    if rargs.get("delta_floor", 1e-6) > DELTA_FLOOR:
        raise ConversionError(f"mixers.{r}.delta_floor: RecurrentGemma's RG-LRU has no floor on -log a; set "
                              f"delta_floor: {DELTA_FLOOR} (the function then matches)")
    d_rnn = rargs.get("d_rnn") or round(4 * stack.d_model / 3)
    heads = rargs.get("heads", 1)
    config: dict[str, Any] = {
        "vocab_size": stack.vocab_size, "hidden_size": stack.d_model, "num_hidden_layers": len(letters),
        "intermediate_size": 2 * int(round(stack.mlp_expand * stack.d_model)), "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": stack.norm_eps if stack.norm_eps is not None else float(torch.finfo(torch.float32).eps),
        "tie_word_embeddings": stack.tie_embeddings, "logits_soft_cap": stack.logit_soft_cap,
        "lru_width": d_rnn, "conv1d_width": rargs.get("d_conv", 4), "num_attention_heads": heads,
        "block_types": [{v: k for k, v in LETTERS.items()}["A" if classes[x] == SPARSE else "R"] for x in stack.pattern],
        "num_key_value_heads": heads, "head_dim": stack.d_model // heads, "attention_window_size": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    }
    a = next((letter for letter, c in classes.items() if c == SPARSE), None)
    if a is not None:
        aargs = _args(stack, a)
        head_dim = aargs.get("head_dim") or stack.d_model // aargs.get("heads", 4)
        if aargs.get("heads", 4) != heads:
            raise ConversionError(f"mixers.{a}.heads: RecurrentGemma's attention and RG-LRU gates share "
                                  f"num_attention_heads; RGLRU has {heads}, attention {aargs.get('heads', 4)}")
        for key, default in (("dilation", 1), ("global_tokens", 0), ("random_blocks", 0)):
            if aargs.get(key, default) != default:
                raise ConversionError(f"mixers.{a}.{key}: RecurrentGemma's attention is a plain sliding window")
        if not aargs.get("rotary", True) or aargs.get("window", 64) is None:
            raise ConversionError(f"mixers.{a}: RecurrentGemma's attention rotates and has a window")
        if aargs.get("out_bias", aargs.get("bias", False)) is not True:
            raise ConversionError(f"mixers.{a}.out_bias: RecurrentGemma's output projection has a bias")
        config.update(num_key_value_heads=aargs.get("kv_heads") or heads, head_dim=head_dim,
                      attention_window_size=aargs.get("window", 64), attention_bias=bool(aargs.get("bias", False)),
                      rope_parameters={"rope_type": "default", "rope_theta": float(aargs.get("rotary_base", 10000.0)),
                                       "partial_rotary_factor": (aargs.get("rotary_dim") or head_dim) / head_dim})
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["embedding.weight"],
                                    "model.final_norm.weight": state["norm.weight"] - 1}
    if not stack.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"]
    for i, letter in enumerate(letters):
        zoo, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "temporal_pre_norm.weight"] = state[zoo + "mixer_norm.weight"] - 1
        out[hf + "channel_pre_norm.weight"] = state[zoo + "mlp_norm.weight"] - 1
        m, t = zoo + "mixer.", hf + "temporal_block."
        if classes[letter] == RGLRU:
            x, y = state[m + "in_proj.weight"].chunk(2)
            xb, yb = state[m + "in_proj.bias"].chunk(2)
            out.update({t + "linear_x.weight": x, t + "linear_y.weight": y, t + "linear_x.bias": xb, t + "linear_y.bias": yb,
                        t + "conv_1d.weight": state[m + "conv1d.weight"], t + "conv_1d.bias": state[m + "conv1d.bias"],
                        t + "rg_lru.recurrent_gate_weight": state[m + "gate_a.weight"],
                        t + "rg_lru.recurrent_gate_bias": state[m + "gate_a.bias"].reshape(heads, -1),
                        t + "rg_lru.input_gate_weight": state[m + "gate_x.weight"],
                        t + "rg_lru.input_gate_bias": state[m + "gate_x.bias"].reshape(heads, -1),
                        t + "rg_lru.recurrent_param": -state[m + "Lambda"],
                        t + "linear_out.weight": state[m + "out_proj.weight"], t + "linear_out.bias": state[m + "out_proj.bias"]})
        else:
            _split_kv(state, m, out, t)
            out[t + "o_proj.bias"] = state[m + "out_proj.bias"]
        gate, up = state[zoo + "mlp.up.weight"].chunk(2)
        gb, ub = state[zoo + "mlp.up.bias"].chunk(2)
        p = hf + "mlp_block."
        out.update({p + "gate_proj.weight": gate, p + "up_proj.weight": up, p + "gate_proj.bias": gb, p + "up_proj.bias": ub,
                    p + "down_proj.weight": state[zoo + "mlp.down.weight"], p + "down_proj.bias": state[zoo + "mlp.down.bias"]})
    return "recurrent_gemma", "RecurrentGemmaForCausalLM", config, out
