"""Every argument of ``fit``, ``generate``, ``sweep`` and ``plot`` with the bad values its type calls
for (wrong type, out of range, empty, huge, not UTF-8; paths that are files, missing, read-only):
each is refused with exit 2 and one ``error: <argument>: ...`` line naming it, never a traceback
(issue 26, point 4). Nothing trains: a command that accepts its arguments stops where it would
start training (or decoding, or running a sweep) and counts as "accepted", which is allowed only
for the values listed in ACCEPTED, with the reason each is a valid setting.

The cases are enumerated from the parsers and classes (tests/cli/cli_fuzz.py), so an argument added
later joins the fuzz by itself (the mixers' arguments through the stack's ``mixers``). 1,184 cases;
under a minute on two cores. The values in ACCEPTED must get through (a refusal of a valid
setting fails the test as a traceback does).
"""

from __future__ import annotations

import os
import re
import sys

import pytest

import cli_fuzz
from cli_fuzz import Case, run_case
from helpers import ROOT

MIXER = "model.init_args.stack.mixers.A.init_args"
# (argument, kind of value) pairs a command rightly accepts: settings, not mistakes.
_COUNTS = {"zero", "very large"}  # 0 disables or means none; a large count is only large
ACCEPTED: dict[str, set[str]] = {
    # Lightning's loop limits: 0 = do none, -1 = no limit, and any count is a valid budget.
    **{f"trainer.{name}": {"negative", *_COUNTS} for name in ("max_epochs", "max_steps", "num_sanity_val_steps")},
    **{f"trainer.{name}": set(_COUNTS) for name in (
        "min_epochs", "min_steps", "fast_dev_run", "limit_train_batches", "limit_val_batches", "limit_test_batches",
        "limit_predict_batches", "overfit_batches", "reload_dataloaders_every_n_epochs", "gradient_clip_val")},
    # Large intervals are valid (validate, log or accumulate rarely).
    **{f"trainer.{name}": {"very large"} for name in (
        "check_val_every_n_epoch", "log_every_n_steps", "accumulate_grad_batches", "val_check_interval")},
    # The launcher of a multi-node job knows how many nodes it has; the trainer does not.
    "trainer.num_nodes": {"very large"},
    # 0 = no periodic checkpoint; any interval is valid; save_top_k -1 = all, 0 = none (last.ckpt still).
    "checkpoint.every_n_epochs": set(_COUNTS),
    "checkpoint.every_n_train_steps": set(_COUNTS),
    "checkpoint.save_top_k": {"negative", "zero"},
    "seed_everything": {"zero"},
    # A pause step beyond the budget never pauses: the run trains to its end.
    "pause_at_step": {"very large"},
    "model.init_args.optim.warmup_steps": set(_COUNTS),
    # Seeds: any value in [0, 2^63).
    **{f"data.init_args.{name}": {f"{module} {label}" for module in ("MQAR", "ByteText") for label in _COUNTS}
       for name in ("seed", "order_seed")},
    "data.init_args.num_workers": {"MQAR zero", "ByteText zero"},
    # A batch larger than the set is the whole set, one batch; eval_chunk only bounds a chunk.
    "data.init_args.batch_size": {"MQAR very large", "ByteText very large"},
    "data.init_args.eval_chunk": {"InductionHeads very large"},
    # Used only for the longer test lengths (eval_lengths), which the defaults have none of.
    "data.init_args.eval_batch_size": {"InductionHeads very large"},
    "data.init_args.num_eval_examples": {"InductionHeads very large"},
    # Mixers: seeds; arguments the default settings do not use (the FAVOR+ feature count without
    # feature_map=favor, the gate's rank without a gate, faiss index settings with the exact
    # index); lengths longer than any sequence (one chunk, one segment, a window over everything:
    # the kernels cap them at the sequence); zero global tokens or random blocks, and no memory
    # (retrieval off).
    **{f"{MIXER}.seed": {f"{cls} {label}" for cls in ("LSHAttention", "LinearAttention", "SparseAttention")
                         for label in ("negative", *_COUNTS)}},
    # A zero floor for the initial step sizes, and no epsilon in the linear attention's normaliser.
    f"{MIXER}.dt_init_floor": {"Mamba zero", "Mamba2 zero"},
    f"{MIXER}.eps": {"LinearAttention zero"},
    f"{MIXER}.num_features": {"LinearAttention very large"},
    f"{MIXER}.gate_rank": {"LinearAttention very large"},
    **{f"{MIXER}.{name}": {"MemorizingAttention very large"} for name in ("segment_length", "hnsw_m", "ivf_lists", "ivf_probe")},
    f"{MIXER}.memory_size": {"MemorizingAttention zero"},
    f"{MIXER}.chunk_size": {"LSHAttention very large"},
    **{f"{MIXER}.{name}": {"SparseAttention very large"} for name in ("window", "dilation", "block_size")},
    **{f"{MIXER}.{name}": {"SparseAttention zero", "SparseAttention very large"} for name in ("global_tokens", "random_blocks")},
    # The implicit filter's l_max is a time scale (t runs from 0 to 1 over it), not a size.
    f"{MIXER}.l_max": {"Hyena very large", "BaseConv very large"},
    # No hidden layer after the first in the filter network.
    f"{MIXER}.filter_depth": {"Hyena zero", "BaseConv zero"},
    # Seeds in [0, 2^64); no new tokens (a prefill timing); token 0 as the end token.
    "generate:seed": {"zero", "very large"},
    "generate:max_new_tokens": {"zero"},
    "generate:eos_token": {"zero"},
    # A byte-level model takes the prompt's bytes as they are, UTF-8 or not (its tokens are bytes).
    "generate:prompt": {"non-UTF-8"},
}
POSITIONAL = {("sweep", "file"), ("plot", "sweep_dirs")}  # errors name the path given, not the argument


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check(case: Case) -> str | None:
    """None if ``case`` ended as promised, else what went wrong."""
    outcome = run_case(case)
    if outcome.code == "raised":
        return f"raised {type(outcome.error).__name__}: {str(outcome.error)[:300]}"
    if "Traceback" in outcome.stderr:
        return "a traceback on stderr"
    key_of_case = case.argument if case.command == "fit" else f"{case.command}:{case.argument}"
    valid = case.label in ACCEPTED.get(key_of_case, ())
    if outcome.code == "reached":
        return None if valid else "accepted (reached training), not refused"
    if valid:
        return f"refused a valid setting: {outcome.stderr.strip()[-300:]!r}"
    if outcome.code != 2:
        return f"exit {outcome.code}, expected 2; stderr: {outcome.stderr.strip()[-300:]!r}"
    lines = outcome.error_lines()
    if len(lines) != 1 or any(line.startswith("usage:") for line in outcome.stderr.splitlines()):
        return f"not one keyed line: {outcome.stderr.strip()[-400:]!r}"
    return None if names_the_argument(lines[0], case) else f"does not name {case.argument!r}: {lines[0]!r}"


def names_the_argument(line: str, case: Case) -> bool:
    """Whether the error line is keyed at the argument (its last name, e.g. ``max_steps``, or a key
    under it, e.g. ``trainer.logger.class_path``), or names it as a word in its message (a
    relation: ``seq_len: 64 is too short for num_kv_pairs=...``), or, for a path, names the path."""
    key, _, message = line[len("error: "):].partition(": ")
    name = case.argument.rpartition(".")[2]
    spellings = {name, name.replace("_", "-")}
    if key.rpartition(".")[2] in spellings or key.startswith(f"{case.argument}.") or key == case.argument:
        return True
    if any(re.search(rf"(?<![\w.]){re.escape(s)}\b", message) for s in spellings):
        return True
    given = case.argv[-1].partition("=")[2] if case.argv[-1].startswith("--") else case.argv[-1]
    is_path = (case.command, case.argument) in POSITIONAL or os.sep in given
    return is_path and bool(given) and _escaped(given) in line


def _run(cases: list[Case]) -> None:
    failures = [f"{case.id}: {problem}" for case in cases if (problem := check(case)) is not None]
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the promise:\n" + "\n".join(failures)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the cases point at, a byte-level corpus, a one-run sweep file and a tiny trained
    byte-level run (for generate); the cases run from its folder."""
    root = tmp_path_factory.mktemp("fuzz")
    paths = cli_fuzz.make_paths(root / "paths")
    words = "the quick brown fox jumps over a lazy dog while def class return import".split()
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(words[(i * 7) % len(words)] for i in range(4000)))
    sweep_file = root / "tiny.yaml"
    sweep_file.write_text(f"name: tiny\nbase: [{ROOT / 'configs' / 'transformer.yaml'}]\nlr: [1.0e-3]\ntune: [lr]\n")
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(root)
    sys.argv = ["hybrids"]
    try:
        from hybrids.cli.fit import build_cli  # noqa: PLC0415

        build_cli(["fit", *cli_fuzz.generate_run_config(corpus), "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
        yield {"paths": paths, "corpus": corpus, "sweep_file": sweep_file}
    finally:
        os.chdir(cwd)
        sys.argv = argv


FIT_SHARDS = 4


@pytest.mark.parametrize("shard", range(FIT_SHARDS))
def test_fit_arguments(world, shard):
    cases = list(cli_fuzz.fit_cases(world["paths"], world["corpus"]))
    assert len(cases) > 400  # the enumeration found the trainer's, model's and data modules' arguments
    _run(cases[shard::FIT_SHARDS])


MIXER_SHARDS = 3


@pytest.mark.parametrize("shard", range(MIXER_SHARDS))
def test_mixer_arguments(world, shard):
    cases = list(cli_fuzz.mixer_cases())
    assert len({c.label.split()[0] for c in cases}) >= 10  # every mixer class of hybrids.mixers
    _run(cases[shard::MIXER_SHARDS])


def test_generate_arguments(world):
    cases = list(cli_fuzz.generate_cases(world["paths"], cli_fuzz.generate_run_config(world["corpus"])))
    assert {c.argument for c in cases} >= {"max_new_tokens", "temperature", "top_k", "top_p", "eos_token", "seed",
                                           "batch", "prompt", "prompt_tokens", "config", "ckpt_path"}
    _run(cases)


def test_sweep_arguments(world):
    cases = list(cli_fuzz.sweep_cases(world["paths"], world["sweep_file"]))
    assert {c.argument for c in cases} >= {"file", "workers", "threads", "launcher", "gpus", "ray_address", "out", "only"}
    _run(cases)


def test_plot_arguments(world):
    cases = list(cli_fuzz.plot_cases(world["paths"], ROOT / "notebooks" / "demo_runs" / "notebook_mqar"))
    assert {c.argument for c in cases} >= {"sweep_dirs", "out", "metric", "mode", "report", "tuned"}
    _run(cases)


def test_a_traceback_is_reported(monkeypatch):
    """The harness itself: a command that raises is a failure, not a pass."""
    from hybrids.cli import plot  # noqa: PLC0415

    monkeypatch.setattr(plot, "folder_problem", lambda path: 1 / 0)
    problem = check(Case("plot", "sweep_dirs", "planted", (str(ROOT / "notebooks"),)))
    assert problem is not None and problem.startswith("raised ZeroDivisionError")
