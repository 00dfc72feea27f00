"""Text corpora as raw bytes, split into training, validation and test sets deterministically.

Where a corpus has documents (a folder: one document per file; the default corpus), each document
goes wholly to one split, chosen by a hash of its relative path: the assignment of a document
never depends on which other documents exist, so it is the same on every machine and run, and
adding a file moves no other. A single file is one long document and is split by bytes: enwik8
(a file named ``enwik8``, 10^8 bytes) by its customary 90M / 5M / 5M, any other file by the same
90% / 5% / 5% fractions.

The default corpus (``path=None``) is the source of the Python standard library of the running
interpreter: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` except the test suites
(folders named ``test``, ``tests``, ``idle_test``) and installed packages (``site-packages``).
It is real text (code, docstrings and comments written by the CPython developers, under the PSF
License), present wherever Python is, and needs no download. For CPython 3.11.7 it is 734 files,
12,118,641 bytes; :attr:`Corpus.checksum` identifies the exact text (another Python version
gives another corpus, and another checksum).
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
ENWIK8_SIZE = 100_000_000
ENWIK8_SPLIT = (90_000_000, 95_000_000)  # train: [0, 90M), val: [90M, 95M), test: [95M, 100M)
# The fraction of documents (or of a single file's bytes) in validation and in test.
HELD_OUT_FRACTION = 0.05
STDLIB_SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class Document:
    name: str  # the path relative to the corpus root, with "/" separators
    data: bytes


@dataclass
class Corpus:
    """A corpus's documents per split, and what identifies it."""

    name: str
    splits: dict[str, list[Document]]  # "train" / "val" / "test" -> documents in name order
    checksum: str  # sha256 over every document's name and bytes, in name order
    size: int  # bytes in all

    def split_bytes(self, split: str) -> int:
        return sum(len(d.data) for d in self.splits[split])


def split_of(name: str) -> str:
    """The split of a document, from a hash of its name alone (module docstring)."""
    value = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    if value < 1 - 2 * HELD_OUT_FRACTION:
        return "train"
    return "val" if value < 1 - HELD_OUT_FRACTION else "test"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents() -> list[Document]:
    """The default corpus: the standard library's ``.py`` files, test suites left out."""
    root = stdlib_root()
    paths = []
    for folder, subfolders, files in os.walk(root):
        # Pruned, not filtered afterwards: site-packages may hold far more than the library.
        subfolders[:] = [d for d in subfolders if d not in STDLIB_SKIPPED_FOLDERS]
        paths += [Path(folder) / f for f in files if f.endswith(".py")]
    return _read(root, paths)


def _read(root: Path, paths: list[Path]) -> list[Document]:
    docs = [Document(p.relative_to(root).as_posix(), p.read_bytes()) for p in paths if p.is_file()]
    return sorted(docs, key=lambda d: d.name)


def _checksum(docs: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + len(doc.data).to_bytes(8, "little"))
        digest.update(doc.data)
    return digest.hexdigest()


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The corpus at ``path`` (a file or a folder of text files; None: the default corpus),
    split as the module docstring says. Raises FileNotFoundError / ValueError for a missing or
    empty corpus."""
    if path is None:
        docs, name = stdlib_documents(), f"python-stdlib ({stdlib_root()})"
        if not docs:
            raise FileNotFoundError(f"no .py files under the standard library folder {stdlib_root()}")
        return _by_document(name, docs)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        docs = _read(path, files)
        if not docs or not any(d.data for d in docs):
            raise ValueError(f"{path}: holds no text (no non-hidden, non-empty files)")
        return _by_document(str(path), docs)
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: is empty")
    if path.name == "enwik8" and len(data) == ENWIK8_SIZE:
        train_end, val_end = ENWIK8_SPLIT
    else:
        train_end = int(len(data) * (1 - 2 * HELD_OUT_FRACTION))
        val_end = int(len(data) * (1 - HELD_OUT_FRACTION))
    doc = Document(path.name, data)
    parts = {"train": data[:train_end], "val": data[train_end:val_end], "test": data[val_end:]}
    splits = {split: [Document(f"{path.name}[{split}]", part)] for split, part in parts.items()}
    return Corpus(str(path), splits, _checksum([doc]), len(data))


def _by_document(name: str, docs: list[Document]) -> Corpus:
    splits: dict[str, list[Document]] = {split: [] for split in SPLITS}
    for doc in docs:
        splits[split_of(doc.name)].append(doc)
    if not all(splits.values()):
        # Too few documents for every split to get one (a folder of a handful of files): each
        # document is cut by bytes instead, 90% / 5% / 5%, so that no split is empty.
        splits = {split: [] for split in SPLITS}
        for doc in docs:
            train_end = int(len(doc.data) * (1 - 2 * HELD_OUT_FRACTION))
            val_end = int(len(doc.data) * (1 - HELD_OUT_FRACTION))
            for split, part in zip(SPLITS, (doc.data[:train_end], doc.data[train_end:val_end], doc.data[val_end:])):
                splits[split].append(Document(f"{doc.name}[{split}]", part))
        name += " (too few documents to split by document: each split by bytes)"
    return Corpus(name, splits, _checksum(docs), sum(len(d.data) for d in docs))
