"""Tiny random Hugging Face models of the six families hybrids.hf converts, saved with
save_pretrained (no download): what docs/hf.md measures the zoo's tools on.

    python scripts/hf_tiny_models.py OUT        # OUT/mamba, OUT/falcon_mamba, ... (needs the [hf] extra)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import transformers

COMMON = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 4}
MODELS = {
    "mamba": (transformers.MambaConfig, transformers.MambaForCausalLM, {"state_size": 16, "time_step_rank": 4}),
    "falcon_mamba": (transformers.FalconMambaConfig, transformers.FalconMambaForCausalLM,
                     {"state_size": 16, "time_step_rank": 4}),
    "mamba2": (transformers.Mamba2Config, transformers.Mamba2ForCausalLM,
               {"state_size": 16, "head_dim": 16, "num_heads": 8, "n_groups": 1, "chunk_size": 64}),
    "recurrent_gemma": (transformers.RecurrentGemmaConfig, transformers.RecurrentGemmaForCausalLM,
                        {"intermediate_size": 192, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
                         "lru_width": 64, "attention_window_size": 128}),
    "jamba": (transformers.JambaConfig, transformers.JambaForCausalLM,
              {"intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1, "num_experts": 4,
               "num_experts_per_tok": 2, "attn_layer_period": 4, "attn_layer_offset": 2, "expert_layer_period": 2,
               "expert_layer_offset": 1, "mamba_d_state": 16, "mamba_dt_rank": 4}),
    "bamba": (transformers.BambaConfig, transformers.BambaForCausalLM,
              {"intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1, "attn_layer_indices": [2],
               "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 16, "mamba_chunk_size": 64}),
}


def main(out: Path) -> None:
    for name, (config_class, model_class, extra) in MODELS.items():
        torch.manual_seed(0)
        model = model_class(config_class(**COMMON, **extra)).eval()
        model.save_pretrained(out / name)
        print(f"{out / name}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
