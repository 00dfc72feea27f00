"""The initial scale of the embedding: rows of norm ~1 (std 1/sqrt(d_model)), so that the tied
head's logits start at std ~1 at every width. The fixed std 0.02 it replaced gave logits of std
0.02 sqrt(d) and AdamW steps of lr / 0.02 of each element, and attention on MQAR then sat at
chance for a long, seed-dependent time at d_model 128."""

import pytest
import torch

from hybrids.model import HybridLM

ATTN = {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}


@pytest.mark.parametrize("d_model", [16, 128, 512])
def test_embedding_rows_have_norm_one_and_logits_std_one(d_model):
    torch.manual_seed(0)
    model = HybridLM(vocab_size=2048, d_model=d_model, n_layers=2, mixers=ATTN, mlp_expand=0)
    assert model.head.weight is model.embedding.weight
    weight = model.embedding.weight.detach()
    assert weight.std().item() == pytest.approx(d_model**-0.5, rel=0.05)
    assert weight.norm(dim=1).mean().item() == pytest.approx(1.0, rel=0.1)
    with torch.no_grad():
        logits = model(torch.randint(2048, (4, 32)))
    assert 0.8 < logits.std().item() < 1.25, logits.std().item()


def test_untied_head_keeps_its_own_init():
    torch.manual_seed(0)
    model = HybridLM(vocab_size=256, d_model=64, n_layers=1, mixers=ATTN, mlp_expand=0, tie_embeddings=False)
    assert model.head.weight is not model.embedding.weight
    assert model.embedding.weight.std().item() == pytest.approx(64**-0.5, rel=0.1)
