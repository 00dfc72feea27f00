"""LightningDataModules of the synthetic tasks: MQAR, selective copying, induction heads."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from hybrids.data.induction_heads import check_induction_arguments, induction_heads
from hybrids.data.loading import EpochShuffle  # noqa: F401  (re-exported)
from hybrids.data.mqar import check_mqar_arguments, multiquery_ar
from hybrids.data.selective_copying import check_selective_copying_arguments, selective_copying
from hybrids.data.synthetic import SyntheticTask, check_examples_fit, check_positive, derive_seed
from hybrids.errors import ConfigError, config_section


class MQAR(SyntheticTask):
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
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_mqar_arguments(seq_len, num_kv_pairs, vocab_size)
            check_positive(power_a=power_a)
        # Set before the base class checks train_lengths with check_length.
        self.seq_len, self.num_kv_pairs, self.vocab_size = seq_len, num_kv_pairs, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed, num_workers,
                         train_lengths, length_steps)
        with config_section("data"):
            check_examples_fit(type(self), max([seq_len, *(train_lengths or [])]), self._set_sizes())
        self.save_hyperparameters()

    def check_length(self, seq_len: int) -> None:
        check_mqar_arguments(seq_len, self.num_kv_pairs, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        return multiquery_ar(num_examples, seq_len, hp.num_kv_pairs, hp.vocab_size, hp.power_a,
                             hp.random_non_queries, seed)


class SelectiveCopying(SyntheticTask):
    """Selective copying (see :func:`hybrids.data.selective_copying.selective_copying`).

    Logs, beside the token accuracy over the copied tokens (``val/acc``, ``test/acc``), the
    fraction of examples copied perfectly (``val/exact``, ``test/exact``).

    Args:
        seq_len: tokens per example, markers included (at least ``2 * num_tokens``).
        num_tokens: content tokens to remember and copy.
        vocab_size: 0 is noise, 1 the marker, content tokens come from ``[2, vocab_size)``.
        selective: content at random positions (True, the selective task) or at the front (False,
            plain copying).
        num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
            num_workers: as for :class:`MQAR` (test ``seed + 1``, validation ``seed + 2``).
    """

    extra_metrics = ("exact",)

    def __init__(
        self,
        seq_len: int = 256,
        num_tokens: int = 16,
        vocab_size: int = 16,
        selective: bool = True,
        num_train_examples: int = 20_000,
        num_val_examples: int = 1_000,
        num_test_examples: int = 1_000,
        batch_size: int = 64,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_selective_copying_arguments(seq_len, num_tokens, vocab_size)
            if not isinstance(selective, bool):
                raise ConfigError("selective", f"must be true or false, got {selective!r}")
        # Set before the base class checks train_lengths with check_length.
        self.seq_len, self.num_tokens, self.vocab_size = seq_len, num_tokens, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed, num_workers,
                         train_lengths, length_steps)
        with config_section("data"):
            check_examples_fit(type(self), max([seq_len, *(train_lengths or [])]), self._set_sizes())
        self.save_hyperparameters()

    def check_length(self, seq_len: int) -> None:
        check_selective_copying_arguments(seq_len, self.num_tokens, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        return selective_copying(num_examples, seq_len, hp.num_tokens, hp.vocab_size, seed, hp.selective)


class GeneratedBlocks(Dataset):
    """A test set generated one batch at a time, so that long examples (2^20 tokens) never sit in
    memory all at once: item ``b`` is the batch ``generate(size_b, derive_seed(seed, "test",
    seq_len, b))``. Load it with ``DataLoader(..., batch_size=None)``."""

    def __init__(self, generate, num_examples: int, block: int, seq_len: int, seed: int) -> None:
        self._generate, self.num_examples, self.block = generate, num_examples, block
        self.seq_len, self.seed = seq_len, seed

    def __len__(self) -> int:
        return -(-self.num_examples // self.block)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= b < len(self):
            raise IndexError(b)
        size = min(self.block, self.num_examples - b * self.block)
        return self._generate(size, self.seq_len, derive_seed(self.seed, "test", self.seq_len, b))


class InductionHeads(SyntheticTask):
    """Induction heads (see :func:`hybrids.data.induction_heads.induction_heads`), trained at one
    length and tested at several.

    Training and validation use ``seq_len``. The test loaders are one per entry of
    :attr:`test_lengths` (``seq_len`` first, then ``eval_lengths`` ascending); the Lightning
    module logs ``test/acc@L`` for each (and ``test/acc`` at ``seq_len``). The test set at
    ``seq_len`` is ``induction_heads(num_test_examples, seq_len, vocab_size, seed + 1)``; at a
    longer length it holds ``num_eval_examples`` examples generated batch by batch
    (:class:`GeneratedBlocks`), and the model reads them in chunks of ``eval_chunk`` tokens
    through its recurrent form (:mod:`hybrids.train.long_context`), so that memory stays bounded for
    the fixed-state mixers. A length whose evaluation cannot fit in memory (attention's cache and
    scores grow with the length) is skipped with a warning, not run out of memory.

    Args:
        seq_len: training (and validation) length; the Mamba paper uses 256.
        vocab_size: the trigger is 1, content tokens come from ``[2, vocab_size)`` (the paper: 16).
        eval_lengths: longer test lengths, e.g. ``[512, 1024, ..., 16384]``.
        num_eval_examples: examples per longer length (fewer than ``num_test_examples`` keeps
            attention's quadratic evaluation affordable on a CPU).
        eval_batch_size: examples per test batch at the longer lengths (None: ``batch_size``).
        eval_chunk: tokens per chunk when reading a long example.
        num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed,
            num_workers: as for :class:`MQAR`.

    ``eval_lengths``, ``num_eval_examples``, ``eval_batch_size`` and ``eval_chunk`` change the
    evaluation only: they are not part of the run's identity, so a trained run can be tested at
    other lengths (``hybrids test ... --data.eval_lengths '[32768]'``).
    """

    def __init__(
        self,
        seq_len: int = 256,
        vocab_size: int = 16,
        eval_lengths: list[int] | None = None,
        num_train_examples: int = 20_000,
        num_val_examples: int = 1_000,
        num_test_examples: int = 1_000,
        num_eval_examples: int = 256,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        eval_chunk: int = 2048,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        train_lengths: list[int] | None = None,
        length_steps: list[int] | None = None,
    ) -> None:
        with config_section("data"):
            check_induction_arguments(seq_len, vocab_size)
            check_positive(num_eval_examples=num_eval_examples, eval_chunk=eval_chunk)
            if eval_batch_size is not None:
                check_positive(eval_batch_size=eval_batch_size)
            lengths = list(eval_lengths or [])
            for length in lengths:
                if isinstance(length, bool) or not isinstance(length, int) or length < 3:
                    raise ConfigError("eval_lengths", f"each must be an integer >= 3, got {length!r}")
        # Set before the base class checks train_lengths with check_length.
        self.seq_len, self.vocab_size = seq_len, vocab_size
        super().__init__(num_train_examples, num_val_examples, num_test_examples, batch_size, seed, order_seed, num_workers,
                         train_lengths, length_steps)
        with config_section("data"):
            # The longer test sets are generated a batch at a time: one batch of the longest.
            longer = [length for length in lengths if length > seq_len]
            batch = batch_size if eval_batch_size is None else eval_batch_size
            batch_key = ("num_eval_examples" if num_eval_examples <= batch else
                         "batch_size" if eval_batch_size is None else "eval_batch_size")
            longest_batch = (batch_key, min(batch, num_eval_examples) * max(longer) * 16) if longer else None
            check_examples_fit(type(self), max([seq_len, *(train_lengths or [])]), self._set_sizes(), longest_batch)
        self.save_hyperparameters()
        self.num_eval_examples = num_eval_examples
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.eval_chunk = eval_chunk
        self.test_lengths = [seq_len] + sorted(set(lengths) - {seq_len})
        self.test_sets: list[Dataset] | None = None

    def check_length(self, seq_len: int) -> None:
        check_induction_arguments(seq_len, self.vocab_size)

    def generate_at(self, num_examples: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return induction_heads(num_examples, seq_len, self.vocab_size, seed)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in (None, "test", "predict") and self.test_sets is None:
            self.test_sets = [self.test_set] + [
                GeneratedBlocks(self.generate_at, self.num_eval_examples, self.eval_batch_size, length,
                                self._seed + 1)
                for length in self.test_lengths[1:]
            ]

    def test_dataloader(self) -> list[DataLoader]:
        loaders = [self._eval_loader(self.test_set)]
        for blocks in self.test_sets[1:]:
            loaders.append(DataLoader(blocks, batch_size=None, num_workers=self.num_workers))
        return loaders
