"""The model: a stack of residual blocks whose mixers follow a layer pattern, as one ``nn.Module``.

- :class:`HybridLM` (:mod:`.hybrid_lm`): embedding -> blocks -> norm -> LM head, with the
  recurrent form (``init_state``, ``step``, ``prefill``) and generation;
- :class:`StackConfig` (:mod:`.config`): its arguments and their defaults, defined once;
- :mod:`.blocks` (the residual block and the MLP), :mod:`.reversible` (reversible couplings and
  their memory-saving backward), :mod:`.mixer_specs` (mixers from ``class_path``/``init_args``
  specs, with keyed errors), :mod:`.state_carry` (mixer states carried from one segment of a
  document to the next), :mod:`.sampling` (the next token from logits).

Nothing here imports Lightning: the training loop is :mod:`hybrids.train`.
"""

from hybrids.model.config import DEFAULT_MIXERS, StackConfig
from hybrids.model.hybrid_lm import HybridLM

__all__ = ["DEFAULT_MIXERS", "HybridLM", "StackConfig"]
