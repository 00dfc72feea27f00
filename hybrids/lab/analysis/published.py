"""The published orderings this zoo's protocol comparisons are checked against (issue 27), as
claims over the families of the shipped sweep files (:mod:`hybrids.lab.analysis.claims` has the
rules): ``CLAIMS[name]`` for ``hybrids plot --claims name``.

- ``mqar``: configs/sweeps/mqar_tuned_cpu.yaml (families by their ``family`` labels, widths 64
  and 128);
- ``selective_copying``: configs/sweeps/selective_copying_tuned_cpu.yaml (the ``base`` labels);
- ``induction``: configs/sweeps/induction_tuned_cpu.yaml and induction_curriculum_cpu.yaml;
- ``mad``: configs/sweeps/mad_cpu.yaml (MAD scores; the paper's per-task figures could not be
  retrieved here, so the claims are the orderings its abstract states, and zoology's recall gap
  on MAD's recall task).

A statement gives the paper's claim, narrowed to what the sweep can test; where the paper's
figure covers other models than the zoo's, the statement says which of the zoo's stand in.
"""

from __future__ import annotations

from hybrids.lab.analysis.claims import (
    Claim, all_of, at_least, beats, extrapolates, fails_beyond, grows, mad_score_at_least, on_frontier, solves,
)

WIDTHS = (64, 128)
# MQAR's fixed-state families (the recurrences, convolutions and linear attentions of the sweep).
FIXED_STATE = ("s4", "s4d", "mamba", "mamba2", "rglru", "gla", "retnet", "based", "performer")

ZOOLOGY = "Zoology (Arora et al., ICLR 2024), Fig. 2"
BASED = "Based (Arora et al., ICML 2024), recall-memory frontier (Fig. 1)"
GLA = "GLA (Yang et al., ICML 2024), MQAR (Fig. 3)"
SAMBA = "Samba (Ren et al., 2024)"
GRIFFIN = "Griffin (De et al., 2024)"
JAMBA = "Jamba (Lieber et al., 2024)"
MAMBA = "Mamba (Gu and Dao, 2023)"
MAD = "MAD (Poli et al., ICML 2024): its abstract's hybrids-outscale-their-parts finding, read on MAD scores"


def _mqar() -> list[Claim]:
    claims = [Claim(ZOOLOGY, "attention solves MQAR at every width",
                    all_of(*(solves("attention", d_model=w) for w in WIDTHS)))]
    for family in FIXED_STATE:
        if family == "based":
            continue  # Based is the answer zoology proposes, not one of the figure's fixed-state models
        claims.append(Claim(ZOOLOGY, f"fixed-state models fall below attention at a small width: attention beats "
                                     f"{family} at width 64", beats("attention", family, d_model=64)))
    for family in FIXED_STATE:
        if family == "based":
            continue
        claims.append(Claim(ZOOLOGY, f"a fixed-state model's recall grows with its width (state): {family} at "
                                     "width 128 beats width 64", grows(family, "d_model", 64, 128)))
    claims.append(Claim(BASED, "Based lies on the accuracy-state frontier of the fixed-state models: none with "
                               "at most its state is ahead of it",
                        on_frontier("based", [f for f in FIXED_STATE if f != "based"])))
    for w in WIDTHS:
        claims.append(Claim(GLA, f"GLA beats RetNet at width {w}", beats("gla", "retnet", d_model=w)))
    hybrids = ((SAMBA, "mamba_swa", ("mamba", "sliding_window"), "Mamba + sliding window"),
               (GRIFFIN, "rglru_local", ("rglru", "sliding_window"), "RG-LRU + local attention"),
               (JAMBA, "mamba_attention", ("mamba", "attention"), "Mamba + attention"))
    for source, hybrid, parts, words in hybrids:
        for w in WIDTHS:
            claims.append(Claim(source, f"{words} at least as good as each of its parts ({', '.join(parts)}) at "
                                        f"width {w}", all_of(*(at_least(hybrid, part, d_model=w) for part in parts))))
    return claims


SELECTIVE_COPYING = [
    Claim(f"{MAMBA}, Table 1", "the selective layer (Mamba's S6) beats the time-invariant one (S4; here S4D) on "
                               "selective copying", beats("mamba", "s4d")),
    Claim(f"{MAMBA}, Table 1", "Mamba solves selective copying", solves("mamba")),
]

INDUCTION = [
    Claim(f"{MAMBA}, Table 2", "Mamba keeps >= 0.99 accuracy to 64x the training length (the paper: 4,096x, "
                               "to 2^20 tokens; tested here to 16,384)", extrapolates("mamba", 64)),
    Claim(f"{MAMBA}, Table 2", "attention learns the task but fails beyond about 2x the training length",
          fails_beyond("attention", 2)),
]


def _mad() -> list[Claim]:
    # An inference from the abstract, not a figure of the paper (its per-task scores could not be
    # retrieved): hybrid (striped) architectures found through MAD outperform Transformer++, Hyena
    # and Mamba in scaling, and MAD scores track compute-optimal perplexity; so a striped hybrid's
    # MAD score should be at least its parts'.
    claims = []
    for hybrid, parts, words in (("hyena_attention", ("hyena", "attention"), "Hyena + attention"),
                                 ("mamba_attention", ("mamba", "attention"), "Mamba + attention")):
        for part in parts:
            claims.append(Claim(MAD, f"the striped {words} scores at least as high as {part} (MAD score, mean "
                                     "of the six tasks)", mad_score_at_least(hybrid, part)))
    for conv in ("hyena", "h3"):
        claims.append(Claim(ZOOLOGY, f"attention beats the gated convolution {conv} at recall (MAD's in-context "
                                     "recall, vocabulary 64)", beats("attention", conv, recall="vocab64")))
    return claims


CLAIMS: dict[str, list[Claim]] = {"mqar": _mqar(), "selective_copying": SELECTIVE_COPYING, "induction": INDUCTION,
                                  "mad": _mad()}
