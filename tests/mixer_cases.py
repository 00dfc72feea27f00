"""Constructor settings under which every mixer class is put through the shared interface tests.

Each mixer class exported from ``hybrids.mixers`` must appear here at least once
(``test_every_mixer_class_has_cases`` checks it): add a case when you add a mixer.
"""

from hybrids.mixers import Attention

D_MODEL = 16

MIXER_CASES = {
    "attention": (Attention, {"heads": 4}),
    "attention-gqa-norope": (Attention, {"heads": 4, "kv_heads": 2, "rotary": False}),
    "attention-headdim": (Attention, {"heads": 2, "head_dim": 6, "kv_heads": 1}),
}
