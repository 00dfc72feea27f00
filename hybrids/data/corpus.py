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

:func:`corpus_shape` tells from the files' sizes alone (no reading) what each split will hold,
by the same listing and the same split rules as :func:`load_corpus`: what a data module checks
at construction.
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


def _stdlib_files(root: Path) -> list[Path]:
    paths = []
    for folder, subfolders, files in os.walk(root):
        # Pruned, not filtered afterwards: site-packages may hold far more than the library.
        subfolders[:] = [d for d in subfolders if d not in STDLIB_SKIPPED_FOLDERS]
        paths += [Path(folder) / f for f in files if f.endswith(".py")]
    return [p for p in paths if p.is_file()]


def stdlib_documents() -> list[Document]:
    """The default corpus: the standard library's ``.py`` files, test suites left out."""
    root = stdlib_root()
    return _read(root, _stdlib_files(root))


def _read(root: Path, paths: list[Path]) -> list[Document]:
    docs = [Document(p.relative_to(root).as_posix(), p.read_bytes()) for p in paths if p.is_file()]
    return sorted(docs, key=lambda d: d.name)


def _checksum(docs: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + len(doc.data).to_bytes(8, "little"))
        digest.update(doc.data)
    return digest.hexdigest()


# -- which files, and how they split ------------------------------------------------------------
# Shared by load_corpus (which reads the files) and corpus_shape (which only stats them), so that
# a data module can check at construction, cheaply, exactly what loading will later produce.


def _locate(path: str | Path | None) -> tuple[str, Path, list[Path], bool]:
    """(the corpus's name, its root, its files, whether it is a single file) for ``path``;
    FileNotFoundError / ValueError where there is nothing to read."""
    if path is None:
        root = stdlib_root()
        files = _stdlib_files(root)
        if not files:
            raise FileNotFoundError(f"no .py files under the standard library folder {root}")
        return f"python-stdlib ({root})", root, files, False
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no such file or folder: {path}; give a text file, a folder of text files, or null for the default corpus"
        )
    if not path.is_dir():
        return str(path), path.parent, [path], True
    every = [p for p in path.rglob("*") if p.is_file()]
    files = [p for p in every if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        hidden = len(every)
        what = (f"only hidden files ({hidden}, e.g. {every[0].relative_to(path).as_posix()}; names starting with "
                "'.' are skipped, in folders too)") if hidden else "no files"
        raise ValueError(f"{path} holds {what}; a folder corpus needs at least one non-hidden, non-empty file")
    return str(path), path, files, False


def _check_has_text(name: str, sizes: list[int], single: bool) -> None:
    if any(sizes):
        return
    if single:
        raise ValueError(f"{name} is empty (0 bytes); a corpus needs text")
    raise ValueError(f"{name} holds {len(sizes)} non-hidden files, all empty (0 bytes); a corpus needs text")


def _byte_cuts(size: int, name: str | None = None) -> tuple[int, int]:
    """(end of train, end of validation) for a document cut by bytes: enwik8's customary cuts,
    else 90% / 5% / 5%."""
    if name == "enwik8" and size == ENWIK8_SIZE:
        return ENWIK8_SPLIT
    return int(size * (1 - 2 * HELD_OUT_FRACTION)), int(size * (1 - HELD_OUT_FRACTION))


def _assign(names: list[str]) -> dict[str, list[int]] | None:
    """Per split, the indices of the documents ``names`` it gets by hash; None when some split
    would get none (too few documents: each is then cut by bytes instead)."""
    splits: dict[str, list[int]] = {split: [] for split in SPLITS}
    for i, name in enumerate(names):
        splits[split_of(name)].append(i)
    return splits if all(splits.values()) else None


@dataclass
class CorpusShape:
    """What the splits of a corpus will hold, known from the files' sizes alone (no reading)."""

    name: str
    sizes: dict[str, list[int]]  # "train" / "val" / "test" -> the bytes of each of its documents
    size: int  # bytes in all
    single_file: bool  # one file, cut 90% / 5% / 5% by bytes
    by_bytes: bool  # every document cut 90% / 5% / 5% by bytes (a single file, or too few documents)


def corpus_shape(path: str | Path | None = None) -> CorpusShape:
    """The split sizes :func:`load_corpus` will give for ``path``, from the files' sizes: cheap
    even for a corpus of gigabytes. Raises what load_corpus raises for a missing or empty corpus."""
    name, root, files, single = _locate(path)
    # In name order, as load_corpus orders the documents.
    named = sorted((f.relative_to(root).as_posix(), f.stat().st_size) for f in files)
    names, sizes = [n for n, _ in named], [size for _, size in named]
    _check_has_text(name, sizes, single)
    assigned = None if single else _assign(names)
    if assigned is not None:
        split_sizes = {split: [sizes[i] for i in members] for split, members in assigned.items()}
    else:
        split_sizes = {split: [] for split in SPLITS}
        for doc_name, size in zip(names, sizes):
            train_end, val_end = _byte_cuts(size, doc_name if single else None)
            for split, part in zip(SPLITS, (train_end, val_end - train_end, size - val_end)):
                split_sizes[split].append(part)
    return CorpusShape(name, split_sizes, sum(sizes), single, assigned is None)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The corpus at ``path`` (a file or a folder of text files; None: the default corpus),
    split as the module docstring says. Raises FileNotFoundError / ValueError for a missing or
    empty corpus."""
    name, root, files, single = _locate(path)
    if not single:
        docs = _read(root, files)
        _check_has_text(name, [len(d.data) for d in docs], single)
        return _by_document(name, docs)
    file = files[0]
    data = file.read_bytes()
    _check_has_text(name, [len(data)], single)
    train_end, val_end = _byte_cuts(len(data), file.name)
    doc = Document(file.name, data)
    parts = {"train": data[:train_end], "val": data[train_end:val_end], "test": data[val_end:]}
    splits = {split: [Document(f"{file.name}[{split}]", part)] for split, part in parts.items()}
    return Corpus(name, splits, _checksum([doc]), len(data))


def _by_document(name: str, docs: list[Document]) -> Corpus:
    assigned = _assign([d.name for d in docs])
    if assigned is not None:
        splits = {split: [docs[i] for i in members] for split, members in assigned.items()}
    else:
        # Too few documents for every split to get one (a folder of a handful of files): each
        # document is cut by bytes instead, 90% / 5% / 5%, so that no split is empty.
        splits = {split: [] for split in SPLITS}
        for doc in docs:
            train_end, val_end = _byte_cuts(len(doc.data))
            for split, part in zip(SPLITS, (doc.data[:train_end], doc.data[train_end:val_end], doc.data[val_end:])):
                splits[split].append(Document(f"{doc.name}[{split}]", part))
        name += " (too few documents to split by document: each split by bytes)"
    return Corpus(name, splits, _checksum(docs), sum(len(d.data) for d in docs))
