"""Constructor settings under which every mixer class is put through the shared interface tests.

Each mixer class exported from ``hybrids.mixers`` must appear here at least once
(``test_every_mixer_class_has_cases`` checks it): add a case when you add a mixer.
"""

from hybrids.mixers import S4, S4D, Attention

D_MODEL = 16

MIXER_CASES = {
    "attention": (Attention, {"heads": 4}),
    "attention-gqa-norope": (Attention, {"heads": 4, "kv_heads": 2, "rotary": False}),
    "attention-headdim": (Attention, {"heads": 2, "head_dim": 6, "kv_heads": 1}),
    "s4-legs": (S4, {"d_state": 8, "l_max": 32}),
    "s4-legt": (S4, {"d_state": 8, "measure": "legt", "l_max": 16}),
    "s4d-legs-zoh": (S4D, {"d_state": 8}),
    "s4d-lin-bilinear": (S4D, {"d_state": 6, "init": "lin", "discretization": "bilinear"}),
}
