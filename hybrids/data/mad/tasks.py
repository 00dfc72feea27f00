"""LightningDataModules of MAD's six tasks (Poli et al. 2024), with MAD's baseline settings as
defaults: 12,800 training examples (256 for memorization), 1,280 for validation and for test,
batches of 128.

Three sets from three seeds (training ``seed``, test ``seed + 1``, validation ``seed + 2``), as
every synthetic task here; MAD reports its test set, which it also watches while training: here
the validation set plays that part and the test set stays untouched. A run counts as solved at
MAD's early-stopping threshold, 0.999 validation accuracy.
"""

from __future__ import annotations

import torch

from hybrids.data.mad.compression import check_compression_arguments, compression
from hybrids.data.mad.copying import check_mad_copying_arguments, mad_selective_copying
from hybrids.data.mad.fuzzy_recall import check_fuzzy_arguments, fuzzy_in_context_recall
from hybrids.data.mad.memorization import check_memorization_arguments, memorization
from hybrids.data.mad.recall import check_labels, check_recall_arguments, in_context_recall
from hybrids.data.synthetic import SyntheticTask, check_examples_fit, derive_seed
from hybrids.errors import config_section
from hybrids.learning_status import Criterion

MAD_CRITERION = Criterion(threshold=0.999)


class _MADTask(SyntheticTask):
    """What MAD's data modules share: the criterion, the set sizes' defaults and the checks."""

    criterion = MAD_CRITERION

    def _finish(self, train_lengths: list[int] | None) -> None:
        with config_section("data"):
            check_examples_fit(type(self), max([self.seq_len, *(train_lengths or [])]), self._set_sizes())
        self.save_hyperparameters()


class InContextRecall(_MADTask):
    """MAD's in-context recall, and its noisy variant with ``noise_vocab_size`` and ``frac_noise``
    (:func:`hybrids.data.mad.recall.in_context_recall`).

    Args:
        seq_len: tokens per example (even).
        vocab_size: keys, values and (noisy) noise tokens.
        noise_vocab_size, frac_noise: noise tokens, and the fraction of pair slots that are noise.
        train_labels: ``"all"`` (MAD's training: every next token) or ``"scored"`` (the queries only,
            as validation and test always are).
        num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
            num_workers, train_lengths, length_steps: as for :class:`~hybrids.data.MQAR`.
    """

    def __init__(
        self,
        seq_len: int = 128,
        vocab_size: int = 16,
        noise_vocab_size: int = 0,
        frac_noise: float = 0.0,
        train_labels: str = "all",
        num_train_examples: int = 12_800,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_recall_arguments(seq_len, vocab_size, noise_vocab_size, frac_noise)
            check_labels(train_labels)
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self._noise = (noise_vocab_size, frac_noise)
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
                         num_workers, train_lengths, length_steps)
        self._finish(train_lengths)

    def check_length(self, seq_len: int) -> None:
        check_recall_arguments(seq_len, self.vocab_size, *self._noise)

    def _generate(self, num_examples: int, seq_len: int, seed: int, labels: str):
        hp = self.hparams
        return in_context_recall(num_examples, seq_len, hp.vocab_size, hp.noise_vocab_size, hp.frac_noise, seed, labels)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._generate(num_examples, seq_len, seed, "scored")

    def generate_training_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._generate(num_examples, seq_len, seed, self.hparams.train_labels)


class NoisyInContextRecall(InContextRecall):
    """MAD's noisy in-context recall: :class:`InContextRecall` with MAD's noisy baseline as
    defaults (vocabulary 32 of which 16 noise tokens, a fifth of the slots noise)."""

    def __init__(
        self,
        seq_len: int = 128,
        vocab_size: int = 32,
        noise_vocab_size: int = 16,
        frac_noise: float = 0.2,
        train_labels: str = "all",
        num_train_examples: int = 12_800,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        super().__init__(seq_len, vocab_size, noise_vocab_size, frac_noise, train_labels, num_train_examples,
                         num_val_examples, num_test_examples, batch_size, seed, order_seed, num_workers,
                         train_lengths, length_steps)


class FuzzyInContextRecall(_MADTask):
    """MAD's fuzzy in-context recall (:func:`hybrids.data.mad.fuzzy_recall.fuzzy_in_context_recall`):
    training keys of 1 to ``k_motif_size`` tokens; validation and test keys of ``k_motif_size``
    tokens exactly, as MAD's test sets.

    Args:
        seq_len: tokens per example.
        vocab_size: key, value and noise tokens, and the pad token (``vocab_size - 1``).
        k_motif_size, v_motif_size: the longest key and value motifs (3 in MAD).
        noise_vocab_size, frac_noise: noise tokens and the fraction of pairs that are noise (0 in MAD).
        train_labels, num_train_examples, ...: as for :class:`InContextRecall`.
    """

    def __init__(
        self,
        seq_len: int = 128,
        vocab_size: int = 16,
        k_motif_size: int = 3,
        v_motif_size: int = 3,
        noise_vocab_size: int = 0,
        frac_noise: float = 0.0,
        train_labels: str = "all",
        num_train_examples: int = 12_800,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_fuzzy_arguments(seq_len, vocab_size, k_motif_size, v_motif_size, noise_vocab_size, frac_noise)
            check_labels(train_labels)
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self._motifs = (k_motif_size, v_motif_size, noise_vocab_size, frac_noise)
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
                         num_workers, train_lengths, length_steps)
        self._finish(train_lengths)

    def check_length(self, seq_len: int) -> None:
        check_fuzzy_arguments(seq_len, self.vocab_size, *self._motifs)

    def _generate(self, num_examples: int, seq_len: int, seed: int, labels: str, fixed_key_size: bool):
        return fuzzy_in_context_recall(num_examples, seq_len, self.vocab_size, *self._motifs,
                                       fixed_key_size=fixed_key_size, seed=seed, labels=labels)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._generate(num_examples, seq_len, seed, "scored", fixed_key_size=True)

    def generate_training_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._generate(num_examples, seq_len, seed, self.hparams.train_labels, fixed_key_size=False)


class MADSelectiveCopying(_MADTask):
    """MAD's selective copying (:func:`hybrids.data.mad.copying.mad_selective_copying`); logs the
    fraction of examples copied perfectly (``val/exact``) beside the token accuracy.

    Args:
        seq_len: tokens per example (at least ``2 * num_tokens + 1``).
        num_tokens: content tokens to copy (16 in MAD).
        vocab_size: content tokens, the blank and the copy token.
        num_train_examples, ...: as for :class:`InContextRecall`.
    """

    extra_metrics = ("exact",)

    def __init__(
        self,
        seq_len: int = 256,
        num_tokens: int = 16,
        vocab_size: int = 16,
        num_train_examples: int = 12_800,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_mad_copying_arguments(seq_len, num_tokens, vocab_size)
        self.seq_len, self.num_tokens, self.vocab_size = seq_len, num_tokens, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
                         num_workers, train_lengths, length_steps)
        self._finish(train_lengths)

    def check_length(self, seq_len: int) -> None:
        check_mad_copying_arguments(seq_len, self.num_tokens, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return mad_selective_copying(num_examples, seq_len, self.num_tokens, self.vocab_size, seed)


class Compression(_MADTask):
    """MAD's compression (:func:`hybrids.data.mad.compression.compression`), an auto-encoder task:
    the stack must be built with ``readout: last`` (``hybrids fit`` refuses another readout).

    Args:
        seq_len: tokens per example, the compression token included (32 in MAD).
        vocab_size: content tokens and the compression token (16 in MAD).
        num_train_examples, ...: as for :class:`InContextRecall`.
    """

    readout = "last"

    def __init__(
        self,
        seq_len: int = 32,
        vocab_size: int = 16,
        num_train_examples: int = 12_800,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_compression_arguments(seq_len, vocab_size)
        self.seq_len, self.vocab_size = seq_len, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
                         num_workers, train_lengths, length_steps)
        self._finish(train_lengths)

    def check_length(self, seq_len: int) -> None:
        check_compression_arguments(seq_len, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return compression(num_examples, seq_len, self.vocab_size, seed)


class Memorization(_MADTask):
    """MAD's memorization (:func:`hybrids.data.mad.memorization.memorization`): one key-value map
    for the three sets, drawn from ``derive_seed(seed, "map")``.

    Args:
        seq_len: tokens per example (even: key, insert-token slots; 32 in MAD).
        vocab_size: keys, values and the insert token (256 in MAD's baseline).
        num_train_examples: 256 in MAD (the harder settings grow the vocabulary, not the data).
        num_val_examples, ...: as for :class:`InContextRecall`.
    """

    def __init__(
        self,
        seq_len: int = 32,
        vocab_size: int = 256,
        num_train_examples: int = 256,
        num_val_examples: int = 1_280,
        num_test_examples: int = 1_280,
        batch_size: int = 128,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_memorization_arguments(seq_len, vocab_size)
        self.seq_len, self.vocab_size = seq_len, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
                         num_workers, train_lengths, length_steps)
        self._finish(train_lengths)

    def check_length(self, seq_len: int) -> None:
        check_memorization_arguments(seq_len, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return memorization(num_examples, seq_len, self.vocab_size, derive_seed(self._seed, "map"), seed)
