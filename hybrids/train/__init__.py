"""Training with Lightning: the LightningModule (:mod:`.module`), its callbacks, checkpoints and
run identity, and the evaluation of long sequences in chunks."""

from hybrids.train.module import LanguageModel

__all__ = ["LanguageModel"]
