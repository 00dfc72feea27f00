"""Constructor settings under which every mixer class is put through the shared interface tests.

Each mixer class exported from ``hybrids.mixers`` must appear here at least once
(``test_every_mixer_class_has_cases`` checks it): add a case when you add a mixer.
"""

from hybrids.mixers import S4, S4D, Attention
from hybrids.mixers import SparseAttention
from hybrids.mixers import Mamba, RGLRU
from hybrids.mixers import LinearAttention, Mamba2, ShortConv
from hybrids.mixers import LSHAttention, MemorizingAttention
from hybrids.mixers import H3, BaseConv, Hyena
from hybrids.parts.knn_memory import faiss_or_none

D_MODEL = 16

MIXER_CASES = {
    "attention": (Attention, {"heads": 4}),
    "attention-gqa-norope": (Attention, {"heads": 4, "kv_heads": 2, "rotary": False}),
    "attention-headdim": (Attention, {"heads": 2, "head_dim": 6, "kv_heads": 1}),
    "s4-legs": (S4, {"d_state": 8}),  # l_max from the first input
    "s4-legt": (S4, {"d_state": 8, "measure": "legt", "l_max": 16}),
    "s4d-legs-zoh": (S4D, {"d_state": 8}),
    "s4d-lin-bilinear": (S4D, {"d_state": 6, "init": "lin", "discretization": "bilinear"}),
    "sparse-window": (SparseAttention, {"heads": 4, "window": 4, "dilation": 2, "global_tokens": 2}),
    "sparse-gqa-random": (
        SparseAttention, {"heads": 4, "kv_heads": 2, "window": 3, "random_blocks": 1, "block_size": 4}
    ),
    "sparse-full": (SparseAttention, {"heads": 2, "kv_heads": 1, "window": None, "global_tokens": 3}),
    # RecurrentGemma's local attention: half of each head rotates, a bias on the output only
    "sparse-window-partial-rotary": (SparseAttention, {"heads": 4, "kv_heads": 1, "window": 5, "rotary_dim": 2,
                                                       "out_bias": True}),
    "mamba": (Mamba, {"d_state": 4, "expand": 2}),
    "mamba-dtrank": (Mamba, {"d_state": 3, "dt_rank": 3, "d_conv": 3, "expand": 1.5, "bias": True}),
    # Jamba's RMS norms with weights on x_proj's outputs (Falcon-Mamba's are the same without
    # weights; the unfused path throughout)
    "mamba-jamba": (Mamba, {"d_state": 4, "dt_rank": 2, "ssm_input_norm_eps": 1e-3, "ssm_input_norm_weights": True}),
    "rglru": (RGLRU, {}),
    "rglru-wide": (RGLRU, {"d_rnn": 24, "heads": 4, "d_conv": 2}),
    # RecurrentGemma's: tanh GELU on the gate, the first input unscaled (the state counts tokens)
    "rglru-recurrentgemma": (RGLRU, {"d_rnn": 16, "heads": 2, "gate_activation": "gelu_tanh",
                                     "unscaled_first_input": True}),
    "linear-elu": (LinearAttention, {"heads": 2}),
    "performer": (LinearAttention, {"heads": 2, "feature_map": "favor", "num_features": 12, "seed": 0}),
    "based-taylor": (LinearAttention, {"heads": 2, "feature_map": "taylor", "feature_dim": 3}),
    "retnet": (LinearAttention, {"heads": 4, "feature_map": "identity", "decay": "retnet", "gate": True}),
    "gla": (LinearAttention, {"heads": 2, "feature_map": "identity", "decay": "gla", "gate": True, "gate_rank": 4}),
    "mamba2": (Mamba2, {"d_state": 4, "headdim": 8}),
    "mamba2-groups": (Mamba2, {"d_state": 3, "headdim": 4, "ngroups": 2, "d_conv": 3, "expand": 1.5}),
    "short-conv": (ShortConv, {}),
    # Gated convolutions: H3's fixed state; Hyena's and BaseConv's long filters keep the history.
    "h3": (H3, {"d_state": 4}),
    "h3-heads-zoh": (H3, {"d_state": 6, "head_dim": 4, "discretization": "zoh", "init": "legs"}),
    "hyena": (Hyena, {"l_max": 8, "filter_order": 8}),
    "hyena-order3": (Hyena, {"l_max": 16, "order": 3, "filter_order": 6, "emb_dim": 5, "short_filter": 2,
                             "filter_depth": 1}),
    "base-conv": (BaseConv, {"l_max": 8, "filter_order": 8}),
    "base-conv-explicit": (BaseConv, {"l_max": 64, "filter": "explicit", "bias": False}),
    "lsh": (LSHAttention, {"heads": 2, "n_buckets": 4, "n_hashes": 2, "chunk_size": 2}),
    # LENGTH 13 > segments of 4: the memory fills, and evicts (6 < 12 tokens of full segments).
    "memorizing": (MemorizingAttention, {"heads": 2, "segment_length": 4, "memory_size": 6, "top_k": 3}),
    "lsh-norope-one-round": (LSHAttention, {"heads": 4, "n_buckets": 2, "n_hashes": 1, "chunk_size": 3, "rotary": False}),
}

if faiss_or_none() is not None:  # faiss-cpu is an optional extra (installed by the test extra)
    MIXER_CASES["memorizing-faiss-norope"] = (
        MemorizingAttention, {"heads": 4, "segment_length": 3, "memory_size": 32, "top_k": 2, "search": "faiss", "rotary": False}
    )
