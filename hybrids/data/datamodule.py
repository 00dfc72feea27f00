"""LightningDataModules for synthetic tasks."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from hybrids.data.loading import EpochShuffle, ResumableOrder  # noqa: F401  (EpochShuffle: re-exported)
from hybrids.data.mqar import check_mqar_arguments, multiquery_ar
from hybrids.errors import ConfigError, config_section


class MQAR(ResumableOrder, L.LightningDataModule):
    """Multi-query associative recall (see :func:`hybrids.data.mqar.multiquery_ar`).

    Three sets from three seeds: training ``seed``, test ``seed + 1``, validation ``seed + 2``,
    so each holds its own key-value assignments. Hyper-parameters (a sweep's learning rate) are
    chosen on validation and the test set is reported, untouched by the choice.

    Args:
        seq_len: tokens per example (even, at least ``4 * num_kv_pairs``).
        num_kv_pairs: key-value pairs per example, each queried once.
        vocab_size: keys from ``[1, vocab_size // 2)``, values from ``[vocab_size // 2, vocab_size)``.
        num_train_examples, num_val_examples, num_test_examples: sizes of the three sets.
        batch_size: examples per batch.
        power_a: exponent of the query-gap law ``p(g) ~ g^(power_a - 1)``; small = more short gaps.
        random_non_queries: fill non-query positions with random tokens instead of 0.
        seed: seed of the training set (test: ``seed + 1``, validation: ``seed + 2``).
        order_seed: seed of the training order (each epoch's shuffle); None = ``seed``. Sweeps
            vary it with the run's seed, so that seeds differ in initialisation and batch
            order while every run sees the same three sets.
        num_workers: DataLoader workers (0: in the main process, fastest for in-memory tensors).
    """

    def __init__(
        self,
        seq_len: int = 64,
        num_kv_pairs: int = 4,
        vocab_size: int = 128,
        num_train_examples: int = 20_000,
        num_val_examples: int = 1_000,
        num_test_examples: int = 1_000,
        batch_size: int = 64,
        power_a: float = 0.01,
        random_non_queries: bool = True,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        with config_section("data"):
            check_mqar_arguments(seq_len, num_kv_pairs, vocab_size)
            for name, value in [("num_train_examples", num_train_examples), ("num_val_examples", num_val_examples),
                                ("num_test_examples", num_test_examples), ("batch_size", batch_size), ("power_a", power_a)]:
                if value <= 0:
                    raise ConfigError(name, f"must be positive, got {value}")
            if order_seed is not None and (isinstance(order_seed, bool) or not isinstance(order_seed, int) or order_seed < 0):
                raise ConfigError("order_seed", f"must be an integer >= 0 (or null for the data seed), got {order_seed!r}")
            if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
                raise ConfigError("num_workers", f"must be an integer >= 0, got {num_workers!r}")
        self.save_hyperparameters()
        self.seq_len, self.num_kv_pairs, self.vocab_size = seq_len, num_kv_pairs, vocab_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _generate(self, num_examples: int, seed: int) -> TensorDataset:
        hp = self.hparams
        inputs, labels = multiquery_ar(
            num_examples, hp.seq_len, hp.num_kv_pairs, hp.vocab_size, hp.power_a, hp.random_non_queries, seed
        )
        return TensorDataset(inputs, labels)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._generate(self.hparams.num_train_examples, self.hparams.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._generate(self.hparams.num_val_examples, self.hparams.seed + 2)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._generate(self.hparams.num_test_examples, self.hparams.seed + 1)

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        if shuffle:  # training: the order resumes exactly from a mid-epoch checkpoint
            order_seed = self.hparams.seed if self.hparams.order_seed is None else self.hparams.order_seed
            return self.train_loader(dataset, self.batch_size, order_seed, num_workers=self.num_workers)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
