"""Shared by the Hugging Face parity tests: a tiny random transformers model saved to a folder,
and the two checks every family must pass (logits, greedy continuation)."""

from __future__ import annotations

import torch

from hybrids.hf import load_hf


def save_perturbed(model, folder, seed: int = 0, scale: float = 0.3):
    """Every weight moved away from its initialisation's special values (D = 1, zero biases, unit
    norms) by ``scale`` times Gaussian noise, then ``save_pretrained(folder)``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    model.eval().save_pretrained(folder)
    return model


def assert_parity(theirs, folder, vocab_size: int, length: int = 40, prompt: int = 7, new: int = 32):
    """The zoo's float32 model loaded from ``folder``: logits within 1e-5 relative (of their
    largest magnitude) of ``theirs`` on random tokens, and the greedy continuation of ``new``
    tokens identical through the zoo's prefill + step path. ``theirs`` may be the float64 copy
    of the saved model, where transformers' own float32 arithmetic is the less exact side."""
    ours = load_hf(folder)
    tokens = torch.randint(0, vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(tokens).logits
        got = ours(tokens).to(expected.dtype)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    theirs.generation_config.eos_token_id = None  # `new` tokens whatever they are
    # An explicit mask: generate would otherwise take the pad token's occurrences in the prompt
    # for padding and mask them.
    head = tokens[:, :prompt]
    continued = theirs.generate(head, attention_mask=torch.ones_like(head), max_new_tokens=new, do_sample=False,
                                pad_token_id=theirs.config.pad_token_id or 0)
    assert continued.shape == (2, prompt + new)
    assert len(set(continued[:, prompt:].flatten().tolist())) > 4, "a continuation that varies"
    assert torch.equal(ours.generate(head, new), continued)
    return ours
