"""Byte-level text with a corpus it cannot train on stops at construction, with one keyed line
(issue 26): a missing path, an empty file, an empty or hidden-only folder, and a corpus whose
smallest split is shorter than one chunk. Before, each surfaced in setup() as two chained
tracebacks after the trainer had started.

The check stats the files instead of reading them (corpus_shape); the tests below hold it to what
load_corpus and setup() then produce, so that it refuses exactly the corpora that would fail."""

from __future__ import annotations

import pytest

from hybrids.cli.fit import build_cli
from hybrids.data import ByteText
from hybrids.data.corpus import corpus_shape, load_corpus
from hybrids.errors import ConfigError
from helpers import ROOT

BYTES = ROOT / "configs" / "bytes" / "attention.yaml"  # ByteText at seq_len 128


def cli_error(args: list[str], capsys) -> str:
    """The one error line of a CLI call that must stop before training with exit status 2."""
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", str(BYTES), "--trainer.enable_progress_bar=false", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def corpora(root):
    """Paths of bad corpora under ``root``, by case."""
    (root / "empty.txt").write_bytes(b"")
    (root / "empty_folder").mkdir()
    hidden = root / "hidden_only"
    (hidden / ".git").mkdir(parents=True)
    (hidden / ".notes.txt").write_text("skipped: hidden")
    (hidden / ".git" / "HEAD").write_text("skipped: in a hidden folder")
    (root / "short.txt").write_bytes(b"x" * 1000)  # val and test get 50 bytes each: 51 tokens
    return {"missing": root / "missing.txt", "empty_file": root / "empty.txt", "empty_folder": root / "empty_folder",
            "hidden_only": hidden, "short": root / "short.txt"}


@pytest.mark.parametrize("case,key,words", [
    ("missing", "path", "no such file or folder"),
    ("empty_file", "path", "is empty (0 bytes)"),
    ("empty_folder", "path", "holds no files"),
    ("hidden_only", "path", "holds only hidden files (2"),
    ("short", "seq_len", "128 is too long"),
])
def test_a_corpus_it_cannot_train_on_is_one_keyed_line(case, key, words, in_tmp, capsys):
    path = corpora(in_tmp)[case]
    line = cli_error([f"--data.init_args.path={path}"], capsys)
    assert line.startswith(f"error: data.init_args.{key}: ") and words in line
    if case == "short":  # what was found, and what would do
        assert "val 51, test 51" in line and "seq_len <= 50" in line


def test_the_suggested_seq_len_is_the_longest_that_trains(tmp_path):
    # A folder of few documents (each cut by bytes) and one of many (split by document), in
    # both modes: the limit the error names gives every split a chunk; one more gives none.
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir(), many.mkdir()
    for i in range(3):
        (few / f"{i}.txt").write_text("ab" * (200 + 37 * i))
    for i in range(40):
        (many / f"{i:02d}.txt").write_text("word " * (5 + i))
    for path in (few, many, tmp_path / "few" / "0.txt"):
        with pytest.raises(ConfigError) as info:
            ByteText(path=str(path), seq_len=10**6)
        assert info.value.full_key == "data.init_args.seq_len"
        limit = int(info.value.message.split("use seq_len <= ")[1].split(" ")[0].replace(",", ""))
        data = ByteText(path=str(path), seq_len=limit, batch_size=2)
        data.setup("fit")
        assert min(len(s) for s in data.sets.values()) == 1
        with pytest.raises(ConfigError, match="too long"):
            ByteText(path=str(path), seq_len=limit + 1)


def test_segment_mode_needs_text_in_every_split_not_a_whole_chunk(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"0123456789" * 2)  # 20 bytes: 18 / 1 / 1
    data = ByteText(path=str(path), seq_len=64, batch_size=2, segments=True)  # padded segments
    data.setup("fit")
    assert all(len(s) == 1 for s in data.sets.values())
    with pytest.raises(ConfigError) as info:
        ByteText(path=str(path), seq_len=64)  # a chunk needs 65 tokens
    assert info.value.full_key == "data.init_args.seq_len"
    path.write_bytes(b"0123456789")  # 9 / 0 / 1: validation gets nothing, at any seq_len
    for segments in (True, False):
        with pytest.raises(ConfigError) as info:
            ByteText(path=str(path), seq_len=1, segments=segments)
        assert info.value.full_key == "data.init_args.path" and "its val split gets no text" in info.value.message


def test_folders_of_empty_files_and_bad_path_types_are_refused(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / "b.txt").write_bytes(b"")
    for path, words in ((str(tmp_path), "2 non-hidden files, all empty"), (7, "must be a file or folder path")):
        with pytest.raises(ConfigError) as info:
            ByteText(path=path)
        assert info.value.full_key == "data.init_args.path" and words in info.value.message


def test_the_shape_from_file_sizes_is_what_loading_gives(tmp_path):
    single = tmp_path / "book.txt"
    single.write_bytes(bytes(range(256)) * 41)
    few = tmp_path / "few"
    few.mkdir()
    for i in range(2):
        (few / f"{i}.txt").write_bytes(b"z" * (100 + i))
    many = tmp_path / "many"
    (many / "sub").mkdir(parents=True)
    (many / ".hidden").write_text("never read")
    for i in range(50):
        (many / ("sub" if i % 3 else "") / f"{i}.txt").write_bytes(b"y" * (i % 7))  # some empty
    for path in (single, few, many, None):
        shape, corpus = corpus_shape(path), load_corpus(path)
        assert shape.name in corpus.name and shape.size == corpus.size
        assert shape.sizes == {s: [len(d.data) for d in docs] for s, docs in corpus.splits.items()}


def test_a_caller_that_never_reads_the_corpus_can_skip_the_check(tmp_path):
    # hybrids generate builds the data module for its encoding only, maybe where the corpus is not.
    from hybrids.data.byte_text import without_corpus_check

    missing = str(tmp_path / "elsewhere.txt")
    with without_corpus_check():
        data = ByteText(path=missing)
    assert ByteText.decode(data.encode("abc")) == "abc"
    with pytest.raises(ConfigError, match="no such file"):  # reading it still fails, keyed
        data.setup("fit")
    with pytest.raises(ConfigError):  # and the check is back after the block
        ByteText(path=missing)
