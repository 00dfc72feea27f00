"""The shared shape of the synthetic-task data modules: three sets drawn from three seeds.

Training uses ``seed``, test ``seed + 1`` and validation ``seed + 2``, so each set holds its own
examples. Hyper-parameters (a sweep's learning rate) are chosen on validation and the test set is
reported, untouched by the choice. A task subclass says how to draw ``n`` examples from a seed
(:meth:`SyntheticTask.generate`) and which arguments it takes.
"""

from __future__ import annotations

import hashlib
import math

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hybrids.data.curriculum import CurriculumOrder, LengthBatches, check_curriculum, pool_sizes
from hybrids.data.loading import ResumableOrder
from hybrids.errors import ConfigError, config_section, defaults_of
from hybrids.learning_status import Criterion
from hybrids.memory import available_memory, format_bytes


def check_positive(**values: int | float) -> None:
    """ConfigError naming the first argument that is not a positive, finite number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(name, f"must be a positive, finite number, got {value!r}")


def check_loading(order_seed: int | None, num_workers: int) -> None:
    if order_seed is not None and (isinstance(order_seed, bool) or not isinstance(order_seed, int) or order_seed < 0):
        raise ConfigError("order_seed", f"must be an integer >= 0 (or null for the data seed), got {order_seed!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or not 0 <= num_workers <= MAX_WORKERS:
        raise ConfigError("num_workers", f"must be an integer in [0, {MAX_WORKERS}], got {num_workers!r}")


def check_seed(name: str, seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(name, f"must be an integer >= 0, got {seed!r}")


# More worker processes than any machine this runs on could use; a config asking for more is a
# typo (the order of the batches does not depend on it, so a smaller number changes no result).
MAX_WORKERS = 256


def check_examples_fit(task: type, seq_len: int, counts: dict[str, int], extra: tuple[str, int] | None = None) -> None:
    """ConfigError when the examples of the three sets, (inputs, labels) int64 of ``seq_len``
    tokens each, would not fit in the memory available (they are generated whole at setup);
    ``extra``: (argument, bytes) of a further allocation (a test batch of the longest length).
    Keyed at that argument where its bytes are most of the need, else at the argument furthest
    above ``task``'s default."""
    available = available_memory("cpu")
    if available is None:
        return
    examples = sum(counts.values())
    sets = examples * seq_len * 2 * 8
    need = sets + (extra[1] if extra else 0)
    if need <= available:
        return
    if extra and extra[1] > sets:
        raise ConfigError(extra[0], f"one evaluation batch takes {format_bytes(extra[1])} (with the examples, "
                          f"{format_bytes(need)}), more than the {format_bytes(available)} of memory available")
    defaults = defaults_of(task)
    given = {"seq_len": seq_len, **counts}
    key = max(given, key=lambda name: given[name] / max(defaults.get(name) or 1, 1))
    raise ConfigError(key, f"{examples:,} examples of {seq_len:,} tokens (inputs and labels, int64) take "
                      f"{format_bytes(need)}, more than the {format_bytes(available)} of memory available")


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2^63) from any tuple of values (stable across runs and machines), for sets
    that are generated piece by piece: ``derive_seed(seed, "test", length, block)``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SyntheticTask(ResumableOrder, L.LightningDataModule):
    """Base of the synthetic tasks: a training, a validation and a test set of generated examples.

    Subclasses pass the set sizes (and the length curriculum, :mod:`hybrids.data.curriculum`) to
    ``__init__``, set ``self.seq_len`` and ``self.vocab_size``, and implement
    :meth:`generate_at` and :meth:`check_length`. ``extra_metrics`` names the metrics beyond loss and accuracy that the
    Lightning module logs for this task (``"exact"``: the fraction of examples whose every
    labelled token is right).
    """

    extra_metrics: tuple[str, ...] = ()
    #: When a run of the task has finished learning (hybrids.learning_status): solved at
    #: val/acc >= 0.99, plateaued when the last quarter of the budget gains less than 0.01.
    criterion: Criterion = Criterion()

    def __init__(self, num_train_examples: int, num_val_examples: int, num_test_examples: int,
                 batch_size: int, seed: int, order_seed: int | None, num_workers: int,
                 train_lengths: list[int] | None = None, length_steps: list[int] | None = None) -> None:
        with config_section("data"):
            check_positive(num_train_examples=num_train_examples, num_val_examples=num_val_examples,
                           num_test_examples=num_test_examples, batch_size=batch_size)
            check_loading(order_seed, num_workers)
            check_seed("seed", seed)
            check_curriculum(train_lengths, length_steps)
            for length in train_lengths or []:
                try:
                    self.check_length(length)
                except ConfigError as err:
                    raise ConfigError("train_lengths", f"{length}: {err.message}") from None
            if train_lengths and len(train_lengths) > num_train_examples:
                raise ConfigError("train_lengths", f"{len(train_lengths)} lengths need at least as many training "
                                  f"examples, got num_train_examples={num_train_examples}")
        super().__init__()
        self.train_lengths = list(train_lengths) if train_lengths else None
        self.length_steps = list(length_steps) if length_steps is not None else None
        self.num_train_examples, self.num_val_examples = num_train_examples, num_val_examples
        self.num_test_examples = num_test_examples
        self.batch_size, self.num_workers = batch_size, num_workers
        self._seed, self._order_seed = seed, order_seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _set_sizes(self) -> dict[str, int]:
        """The three sets' sizes, by argument name (for :func:`check_examples_fit`)."""
        return {"num_train_examples": self.num_train_examples, "num_val_examples": self.num_val_examples,
                "num_test_examples": self.num_test_examples}

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_examples`` examples of ``seq_len`` tokens drawn from ``seed``: (inputs, labels),
        (n, seq_len) int64."""
        raise NotImplementedError

    def generate_training_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set's examples: :meth:`generate_at` unless the task trains on other labels
        than it is scored on (MAD's recall tasks label every next token in training)."""
        return self.generate_at(num_examples, seq_len, seed)

    def check_length(self, seq_len: int) -> None:
        """ConfigError (any key) where the task's other arguments give no example of ``seq_len``
        tokens; each of ``train_lengths`` is checked with it, and the error keyed there."""

    def generate(self, num_examples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_examples`` examples of ``seq_len`` tokens drawn from ``seed``."""
        return self.generate_at(num_examples, self.seq_len, seed)

    def _tensor_set(self, num_examples: int, seed: int) -> TensorDataset:
        return TensorDataset(*self.generate(num_examples, seed))

    def _longest_training_length(self) -> int:
        return max([self.seq_len, *(self.train_lengths or [])])

    def _batches_per_epoch(self) -> int:
        return -(-self.num_train_examples // self.batch_size)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None and self.train_lengths:
            # A length curriculum: the training examples split between the lengths, each drawn
            # from a seed of its own (hybrids.data.curriculum).
            pools = pool_sizes(self.num_train_examples, len(self.train_lengths))
            sets = [self.generate_training_at(n, length, derive_seed(self._seed, "train", length))
                    for n, length in zip(pools, self.train_lengths)]
            self.train_set = LengthBatches(sets, self._batches_per_epoch())
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TensorDataset(*self.generate_training_at(self.num_train_examples, self.seq_len, self._seed))
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._tensor_set(self.num_val_examples, self._seed + 2)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._tensor_set(self.num_test_examples, self._seed + 1)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        # The order resumes exactly from a mid-epoch checkpoint (hybrids.data.loading).
        order_seed = self._seed if self._order_seed is None else self._order_seed
        if self.train_lengths:
            order = CurriculumOrder(pool_sizes(self.num_train_examples, len(self.train_lengths)), self.batch_size,
                                    self._batches_per_epoch(), order_seed, self.length_steps)
            return self.train_loader(self.train_set, None, order_seed, sampler=order, num_workers=self.num_workers)
        return self.train_loader(self.train_set, self.batch_size, order_seed, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)
