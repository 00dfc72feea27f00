"""Byte-level language modelling on real text, measured in bits per byte.

The corpus (:mod:`hybrids.data.corpus`) is read as raw bytes: token ``b`` is byte ``b`` (0-255),
and token 256 (:data:`BOUNDARY`) stands before every document, so a model knows where one file
ends and the next begins. Each split's documents are joined into one stream (in name order) and
cut into contiguous, non-overlapping chunks of ``seq_len + 1`` tokens: inputs are the first
``seq_len``, labels the last ``seq_len`` (the next token at every position). A label that is the
boundary is -100: the metric counts predicted bytes only.

With ``segments=True`` the data module feeds each document instead as consecutive segments to
one batch slot (:mod:`hybrids.data.segments`), batches ``(inputs, labels, first)``: what a model
that carries state or memory across segments (``MemorizingAttention``, or any stack with
``carry_state``) trains and is evaluated on.

Bits per byte (``val/bpb``, ``test/bpb``) is the mean cross-entropy over the predicted bytes,
in nats, divided by ln 2.
"""

from __future__ import annotations

import contextlib
import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from hybrids.data.corpus import HELD_OUT_FRACTION, Corpus, CorpusShape, Document, corpus_shape, load_corpus
from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.loading import ResumableOrder
from hybrids.data.segments import SegmentBatches, SegmentOrder
from hybrids.data.synthetic import check_loading, check_positive
from hybrids.errors import ConfigError, config_section
from hybrids.learning_status import Criterion

BOUNDARY = 256  # the token before every document
VOCAB_SIZE = 257  # 256 byte values and the boundary


def byte_stream(documents: list[Document]) -> torch.Tensor:
    """The documents as one int16 stream (n,): ``BOUNDARY, doc 1's bytes, BOUNDARY, doc 2's ...``."""
    parts = []
    for doc in documents:
        parts.append(torch.tensor([BOUNDARY], dtype=torch.int16))
        if doc.data:  # (frombuffer refuses an empty buffer: an empty __init__.py is a document too)
            parts.append(torch.frombuffer(bytearray(doc.data), dtype=torch.uint8).to(torch.int16))
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int16)


class ByteChunks(Dataset):
    """Contiguous chunks of a byte stream: item ``i`` is ``(inputs, labels)``, (seq_len,) int64,
    from ``stream[i * seq_len : (i + 1) * seq_len + 1]``; a label that is the boundary is -100."""

    def __init__(self, stream: torch.Tensor, seq_len: int) -> None:
        self.stream, self.seq_len = stream, seq_len

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.seq_len)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        window = self.stream[i * self.seq_len : (i + 1) * self.seq_len + 1].long()
        labels = window[1:].clone()
        labels[labels == BOUNDARY] = IGNORE_INDEX
        return window[:-1], labels


# Whether ByteText checks its corpus at construction (see without_corpus_check).
_check_at_init = True


@contextlib.contextmanager
def without_corpus_check():
    """Build ByteText modules without checking their corpus, inside the ``with`` block: for
    callers that never read it and may run where it is absent (``hybrids generate`` wants only the
    byte encoding; a sweep planner only the vocabulary). setup() still refuses a bad corpus."""
    global _check_at_init
    before, _check_at_init = _check_at_init, False
    try:
        yield
    finally:
        _check_at_init = before


def corpus_checked_at_init() -> bool:
    """False inside :func:`without_corpus_check` (the text data modules read it at construction)."""
    return _check_at_init


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _s(names: list[str]) -> str:
    return "s" if len(names) > 1 else ""


def check_corpus(path: str | None, seq_len: int, segments: bool) -> CorpusShape:
    """The shape of the corpus at ``path`` (:func:`~hybrids.data.corpus.corpus_shape`: the files
    are stat-ed, not read), or a ConfigError keyed ``path`` or ``seq_len`` where some split would
    give no training example: missing, empty, hidden-only, or too short.

    A chunk needs ``seq_len + 1`` tokens of one split's stream (its documents' bytes plus one
    boundary token each); a segment needs one non-empty document (it is padded), so in segment
    mode only an empty split is refused. Checked here, at construction, so that the CLI reports it
    as one keyed line before training; setup() would find it only after the trainer started.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError("path", f"must be a file or folder path, or null for the default corpus; got {path!r}")
    if path is not None and not str(path):
        raise ConfigError("path", "empty; give a file or folder, or leave it out (null) for the default corpus")
    try:
        shape = corpus_shape(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError("path", str(err)) from err
    except OSError as err:  # unreadable folder or file: listing or stat-ing it failed
        raise ConfigError("path", f"cannot read {err.filename or path}: {err.strerror or err}") from err
    per_split = round(1 / HELD_OUT_FRACTION)  # a single file gives each held-out split 1/20 of it
    how = ("a single file is cut 90% / 5% / 5% by bytes" if shape.single_file else
           "too few documents to split by document: each is cut 90% / 5% / 5% by bytes" if shape.by_bytes else
           "documents go wholly to one split, by a hash of their names")
    held = {split: (sum(sizes), len(sizes)) for split, sizes in shape.sizes.items()}
    file_needs = (f"about {per_split} bytes" if segments else
                  f"about {per_split * seq_len:,} bytes at seq_len {seq_len}")
    empty = [split for split, (nbytes, _) in held.items() if nbytes == 0]
    if empty:
        need = f"a single file needs {file_needs}" if shape.single_file else "give more text or more files"
        raise ConfigError(
            "path", f"{shape.name} ({shape.size:,} bytes) is too small: its {_and(empty)} split{_s(empty)} "
            f"get{'' if len(empty) > 1 else 's'} no text ({how}); every split needs text: {need}"
        )
    if segments:  # a segment is padded: any text will do
        return shape
    # Stream tokens per split: the bytes and one boundary per document; a chunk takes seq_len + 1.
    tokens = {split: nbytes + docs for split, (nbytes, docs) in held.items()}
    limit = min(tokens.values()) - 1  # the longest seq_len that gives every split a chunk
    short = [split for split, n in tokens.items() if n < seq_len + 1]
    if short:
        counts = ", ".join(f"{split} {tokens[split]:,}" for split in short)
        hint = f"; a single file needs {file_needs}" if shape.single_file else ""
        raise ConfigError(
            "seq_len", f"{seq_len:,} is too long for {shape.name} ({shape.size:,} bytes; {how}): its {_and(short)} "
            f"split{_s(short)} hold{'' if len(short) > 1 else 's'} fewer tokens ({counts}: bytes plus one boundary "
            f"per document) than one chunk of seq_len + 1 = {seq_len + 1:,}; use seq_len <= {limit:,} or a larger "
            f"corpus{hint}"
        )
    return shape


class ByteText(ResumableOrder, L.LightningDataModule):
    """Byte-level text for language modelling (module docstring); logs ``val/bpb``, ``test/bpb``.

    Args:
        path: a text file or a folder of text files; None = the default corpus, the Python
            standard library's source (see :mod:`hybrids.data.corpus`: name, size, license,
            and how the splits are made).
        seq_len: tokens per training chunk. Every split must hold one chunk (``seq_len + 1``
            tokens; in segment mode, some text): checked at construction, from the files' sizes.
        batch_size: chunks per batch.
        seed: seed of the training order (the corpus and its split do not depend on it).
        order_seed: seed of the training order, overriding ``seed`` (sweeps vary it per run).
        num_workers: DataLoader workers.
        segments: segment mode (module docstring): each document read in order, ``seq_len``
            tokens at a time, by one batch slot. The training documents come in a new order
            every epoch (from the order seed and the epoch; a slot's segments stay in order),
            and a run resumed mid-epoch continues at the batch it stopped at with empty states.

    ``vocab_size`` is 257 (bytes and the boundary). ``encode`` / ``decode`` turn text into tokens
    and back (UTF-8), for ``hybrids generate --prompt``.
    """

    extra_metrics = ("bpb",)
    #: Language modelling is never solved: a run plateaus (val/bpb gaining less than 0.01 bits
    #: per byte over the last quarter of its budget) or is still improving.
    criterion = Criterion(metric="val/bpb", mode="min", threshold=None, margin=0.01)

    def __init__(
        self,
        path: str | None = None,
        seq_len: int = 256,
        batch_size: int = 32,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
        segments: bool = False,
    ) -> None:
        super().__init__()
        with config_section("data"):
            check_positive(seq_len=seq_len, batch_size=batch_size)
            check_loading(order_seed, num_workers)
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
            if not isinstance(segments, bool):
                raise ConfigError("segments", f"must be true or false, got {segments!r}")
            if _check_at_init:
                check_corpus(path, seq_len, segments)
        self.save_hyperparameters()
        self.path, self.seq_len, self.batch_size = path, seq_len, batch_size
        self.vocab_size = VOCAB_SIZE
        self.num_workers = num_workers
        self.segments = segments
        self._order_seed = seed if order_seed is None else order_seed
        self.corpus: Corpus | None = None
        self.sets: dict[str, ByteChunks | SegmentBatches] = {}

    def prepare_corpus(self) -> Corpus:
        if self.corpus is None:
            with config_section("data"):
                try:
                    self.corpus = load_corpus(self.path)
                except (FileNotFoundError, ValueError) as err:
                    raise ConfigError("path", str(err)) from err
            c = self.corpus
            rank_zero_info(
                f"ByteText: {c.name}: {c.size:,} bytes, sha256 {c.checksum[:16]}..., split "
                + ", ".join(f"{s} {c.split_bytes(s):,} bytes / {len(c.splits[s])} documents" for s in c.splits)
            )
        return self.corpus

    def setup(self, stage: str | None = None) -> None:
        corpus = self.prepare_corpus()
        for split in ("train", "val", "test"):
            if split not in self.sets:
                self.sets[split] = self._make_set(corpus.splits[split], split)
                if len(self.sets[split]) == 0:
                    raise ConfigError(
                        "seq_len", f"the {split} split ({corpus.split_bytes(split):,} bytes) is shorter than one chunk "
                        f"of seq_len + 1 = {self.seq_len + 1} tokens; use a shorter seq_len or a larger corpus"
                    )

    def _make_set(self, documents: list[Document], split: str) -> ByteChunks | SegmentBatches:
        if not self.segments:
            return ByteChunks(byte_stream(documents), self.seq_len)
        streams = [byte_stream([doc]) for doc in documents]
        shuffle_seed = self._order_seed if split == "train" else None  # a new document order each epoch
        return SegmentBatches(streams, self.seq_len, self.batch_size, pad=BOUNDARY, ignore=BOUNDARY, shuffle_seed=shuffle_seed)

    def train_dataloader(self) -> DataLoader:
        if self.segments:  # batches come made, in order
            batches = self.sets["train"]
            return self.train_loader(batches, None, self._order_seed, sampler=SegmentOrder(batches), num_workers=self.num_workers)
        return self.train_loader(self.sets["train"], self.batch_size, self._order_seed, num_workers=self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        batch_size = None if self.segments else self.batch_size
        return DataLoader(self.sets[split], batch_size=batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # -- text ------------------------------------------------------------------------------------

    @staticmethod
    def encode(text: str) -> list[int]:
        """Text -> byte tokens (UTF-8)."""
        return list(text.encode("utf-8"))

    @staticmethod
    def decode(tokens: list[int]) -> str:
        """Byte tokens -> text; boundaries become a blank line, invalid UTF-8 is replaced."""
        out = bytearray()
        for token in tokens:
            out += b"\n\n" if token == BOUNDARY else bytes([token])
        return out.decode("utf-8", errors="replace")
