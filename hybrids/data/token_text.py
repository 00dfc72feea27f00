"""Language modelling on text tokenized by a tokenizer from a local ``tokenizer.json`` (Hugging
Face's tokenizers format; the ``[hf]`` extra installs the library): what a pretrained model
converted from Hugging Face (docs/hf.md) reads, is fine-tuned and evaluated on, and generates
from with ``hybrids generate --prompt``.

The corpus is :mod:`hybrids.data.corpus`'s (a file, a folder of files, or by default the Python
standard library's source), split the same way. Each split's documents are tokenized, joined into
one stream with ``boundary_token`` before every document (by default the tokenizer's end-of-text
token where its ``tokenizer_config.json`` names one), and cut into contiguous chunks of
``seq_len + 1`` tokens, as :class:`~hybrids.data.ByteText` does with bytes; a label that is the
boundary is not predicted. Metrics: loss and accuracy per token (no bits per byte: a token is
not a byte).
"""

from __future__ import annotations


import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from hybrids.data.byte_text import ByteChunks, corpus_checked_at_init
from hybrids.data.corpus import Corpus, Document, corpus_shape, load_corpus
from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.loading import ResumableOrder
from hybrids.data.synthetic import check_loading, check_positive
from hybrids.errors import ConfigError, config_section
from hybrids.learning_status import Criterion

TOKENIZER_FILE = "tokenizer.json"


def load_tokenizer(path: str | Path):
    """The tokenizer at ``path`` (a tokenizer.json, or a folder holding one)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as err:  # pragma: no cover - the [hf] and test extras install it
        raise ConfigError("tokenizer", "needs the tokenizers package: pip install -e '.[hf]'") from err
    file = Path(path)
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise ConfigError("tokenizer", f"{path}: no {TOKENIZER_FILE} there; give the file or the folder that holds it")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # noqa: BLE001 (the library raises its own exception types)
        raise ConfigError("tokenizer", f"{file}: not a tokenizer the tokenizers library reads ({err})") from err


def default_boundary(path: str | Path, tokenizer) -> int | None:
    """The id of the end-of-text token that ``tokenizer_config.json`` beside the tokenizer names
    (``eos_token``), or None."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        eos = json.loads(config.read_text()).get("eos_token")
    except (OSError, ValueError):
        return None
    if isinstance(eos, dict):  # {"content": "<|endoftext|>", ...}
        eos = eos.get("content")
    return tokenizer.token_to_id(eos) if isinstance(eos, str) else None


def token_stream(documents: list[Document], tokenizer, boundary: int | None) -> torch.Tensor:
    """The documents tokenized into one int64 stream: ``boundary, doc 1's tokens, boundary, ...``
    (no boundaries where ``boundary`` is None)."""
    texts = [doc.data.decode("utf-8", errors="replace") for doc in documents]
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []:
        if boundary is not None:
            ids.append(boundary)
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.int64)


class TokenChunks(ByteChunks):
    """Contiguous chunks of a token stream, labels at the boundary token not predicted."""

    def __init__(self, stream: torch.Tensor, seq_len: int, boundary: int | None) -> None:
        super().__init__(stream, seq_len)
        self.boundary = boundary

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        window = self.stream[i * self.seq_len : (i + 1) * self.seq_len + 1]
        labels = window[1:].clone()
        if self.boundary is not None:
            labels[labels == self.boundary] = IGNORE_INDEX
        return window[:-1].clone(), labels


class TokenizedText(ResumableOrder, L.LightningDataModule):
    """Text tokenized by a local tokenizer (module docstring).

    Args:
        tokenizer: a ``tokenizer.json`` or the folder holding it (a Hugging Face model's folder).
        path: a text file or a folder of text files; None = the default corpus (the Python
            standard library's source).
        seq_len: tokens per training chunk.
        batch_size: chunks per batch.
        vocab_size: the model's vocabulary; None = the tokenizer's (added tokens included). A
            pretrained model's may be larger (padded to a multiple of 8 or 16), never smaller.
        boundary_token: the id put before every document; None = the end-of-text token of the
            tokenizer's ``tokenizer_config.json`` where it has one, else no boundaries.
        seed, order_seed, num_workers: as :class:`~hybrids.data.ByteText`.

    ``encode`` / ``decode`` turn text into token ids and back, for ``hybrids generate --prompt``.
    """

    criterion = Criterion(metric="val/loss", mode="min", threshold=None, margin=0.01)

    def __init__(
        self,
        tokenizer: str,
        path: str | None = None,
        seq_len: int = 256,
        batch_size: int = 8,
        vocab_size: int | None = None,
        boundary_token: int | None = None,
        seed: int = 0,
        order_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        with config_section("data"):
            check_positive(seq_len=seq_len, batch_size=batch_size)
            check_loading(order_seed, num_workers)
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
            self._tokenizer = load_tokenizer(tokenizer)
            known = self._tokenizer.get_vocab_size(with_added_tokens=True)
            if vocab_size is None:
                vocab_size = known
            elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < known:
                raise ConfigError("vocab_size", f"must be an integer >= the tokenizer's {known:,} tokens (or null for "
                                                f"that), got {vocab_size!r}")
            if boundary_token is None:
                boundary_token = default_boundary(tokenizer, self._tokenizer)
            elif isinstance(boundary_token, bool) or not isinstance(boundary_token, int) or not 0 <= boundary_token < vocab_size:
                raise ConfigError("boundary_token", f"must be a token id in [0, {vocab_size}) (or null), got {boundary_token!r}")
            if corpus_checked_at_init():
                try:
                    corpus_shape(path)
                except (FileNotFoundError, ValueError) as err:
                    raise ConfigError("path", str(err)) from err
        # Not vocab_size: the CLI records the arguments as given (null for the tokenizer's size),
        # the model's hparams carry the resolved size, and Lightning refuses to log the two
        # modules' hparams together where a shared key differs. The run's config keeps the argument.
        self.save_hyperparameters(ignore=["vocab_size"])
        self.path, self.seq_len, self.batch_size = path, seq_len, batch_size
        self.vocab_size, self.boundary = vocab_size, boundary_token
        self.num_workers = num_workers
        self._order_seed = seed if order_seed is None else order_seed
        self.corpus: Corpus | None = None
        self.sets: dict[str, TokenChunks] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is None:
            with config_section("data"):
                try:
                    self.corpus = load_corpus(self.path)
                except (FileNotFoundError, ValueError) as err:
                    raise ConfigError("path", str(err)) from err
        for split in ("train", "val", "test"):
            if split in self.sets:
                continue
            stream = token_stream(self.corpus.splits[split], self._tokenizer, self.boundary)
            self.sets[split] = TokenChunks(stream, self.seq_len, self.boundary)
            if len(self.sets[split]) == 0:
                with config_section("data"):
                    raise ConfigError("seq_len", f"the {split} split ({len(stream):,} tokens) is shorter than one "
                                                 f"chunk of seq_len + 1 = {self.seq_len + 1} tokens; use a shorter "
                                                 "seq_len or a larger corpus")
        rank_zero_info("TokenizedText: " + ", ".join(f"{s} {len(self.sets[s].stream):,} tokens" for s in self.sets))

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.sets["train"], self.batch_size, self._order_seed, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size, num_workers=self.num_workers)

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (no special tokens added)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """Token ids -> text; ids past the tokenizer's vocabulary (a padded model's) are dropped."""
        known = self._tokenizer.get_vocab_size(with_added_tokens=True)
        return self._tokenizer.decode([t for t in tokens if 0 <= t < known], skip_special_tokens=False)
