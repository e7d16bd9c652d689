"""RunDir, the one owner of a run directory's layout, against hand-computed cases; and the rule that comes with
it: no other source file spells a run-dir file name.

This is the one test module (besides src/pbexp/rundir.py itself and the docs) that writes the file names
out: here they are the expected values."""

from __future__ import annotations

import os
import re

import pytest

from helpers.configs import REPO
from pbexp.rundir import RunDir

# ---------------------------------------------------------------- layout


def test_every_path_is_under_the_folder_with_its_documented_name(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.path == tmp_path / "run"
    assert run.results == tmp_path / "run" / "results.json"
    assert run.metrics == tmp_path / "run" / "metrics.jsonl"
    assert run.vocab == tmp_path / "run" / "vocab.txt"
    assert run.tb == tmp_path / "run" / "tb"
    assert run.checkpoints == tmp_path / "run" / "checkpoints"
    assert run.last == tmp_path / "run" / "checkpoints" / "last.pt"
    assert run.best == tmp_path / "run" / "checkpoints" / "best.pt"
    assert run.hydra == tmp_path / "run" / ".hydra"
    assert run.config == tmp_path / "run" / ".hydra" / "config.yaml"
    assert run.overrides == tmp_path / "run" / ".hydra" / "overrides.yaml"
    assert run.hydra_config == tmp_path / "run" / ".hydra" / "hydra.yaml"
    assert run.lock == tmp_path / "run" / ".pbexp.lock"
    assert run.artifact("fasttext.bin") == tmp_path / "run" / "checkpoints" / "fasttext.bin"
    # the rotation checkpoint.save_rotating keeps beside the last checkpoint
    assert run.last.with_suffix(".prev.pt") == tmp_path / "run" / "checkpoints" / "last.prev.pt"


def test_a_run_dir_is_a_path_and_asking_for_paths_creates_nothing(tmp_path):
    run = RunDir(str(tmp_path / "run"))  # a str, a Path or a RunDir
    assert os.fspath(run) == str(tmp_path / "run")
    assert RunDir(run).path == RunDir(tmp_path / "run").path == tmp_path / "run"
    assert repr(run) == f"RunDir({str(tmp_path / 'run')!r})"
    _ = (run.results, run.metrics, run.vocab, run.last, run.best, run.config, run.lock, run.artifact("x.bin"))
    assert run.weights() is None and run.tb_events() == [] and run.read_metrics() == []
    assert run.read_results() is None and not run.is_complete()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- results


def test_write_then_read_results_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")  # not there yet: the write makes it
    record = {
        "status": "completed",
        "test/ppl": 123.5,
        "overrides": ["model=gru", "trainer.lr=1"],
        "steps": 7,
        "stopped_early": False,
        "error": None,
    }
    run.write_results(record)
    assert run.read_results() == record
    assert run.is_complete()


def test_results_are_sorted_indented_json_with_a_final_newline(tmp_path):
    run = RunDir(tmp_path)
    run.write_results({"b": 1, "a": [2]})
    assert run.results.read_text(encoding="utf-8") == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert run.results.stat().st_mode & 0o777 == 0o644  # for others to read too


def test_results_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_results({"status": "failed", "error": "first"})
    run.write_results({"status": "completed"})  # a rewrite replaces the file
    assert os.listdir(tmp_path) == ["results.json"]
    assert run.read_results() == {"status": "completed"}

    def killed_before_the_rename(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(OSError, match="killed"):
        run.write_results({"status": "diverged"})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["results.json"]  # the old record, whole, and no temp file beside it
    assert run.read_results() == {"status": "completed"}


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"status": "compl', b"[1, 2]", b'"completed"', b"null", b"\xff\xfe{}"],
    ids=["empty", "not-json", "half-written", "a-list", "a-string", "null", "not-utf8"],
)
def test_unreadable_or_non_object_results_read_as_none(tmp_path, content):
    run = RunDir(tmp_path)
    run.results.write_bytes(content)
    assert run.read_results() is None and not run.is_complete()


def test_results_path_that_is_a_folder_reads_as_none(tmp_path):
    run = RunDir(tmp_path)
    run.results.mkdir()
    assert run.read_results() is None


@pytest.mark.parametrize(
    "record, complete",
    [({"status": "completed"}, True), ({"status": "failed"}, False), ({"status": "interrupted"}, False), ({}, False)],
)
def test_is_complete_only_for_status_completed(tmp_path, record, complete):
    run = RunDir(tmp_path)
    run.write_results(record)
    assert run.is_complete() is complete


# ---------------------------------------------------------------- metrics


def test_append_writes_one_json_line_per_record(tmp_path):
    run = RunDir(tmp_path / "run")  # not there yet: the first append makes it
    run.append_metrics({"epoch": 1, "valid/ppl": 10.5})
    run.append_metrics({"epoch": 2, "valid/ppl": 9.25})
    assert (
        run.metrics.read_text(encoding="utf-8") == '{"epoch": 1, "valid/ppl": 10.5}\n{"epoch": 2, "valid/ppl": 9.25}\n'
    )


def test_read_metrics_in_epoch_order(tmp_path):
    run = RunDir(tmp_path)
    for epoch in (2, 1, 3):
        run.append_metrics({"epoch": epoch, "lr": 20.0 / epoch})
    assert run.read_metrics() == [{"epoch": 1, "lr": 20.0}, {"epoch": 2, "lr": 10.0}, {"epoch": 3, "lr": 20.0 / 3}]


def test_read_metrics_skips_a_half_written_last_line(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "loss": 1.5}\n{"epoch": 3, "lo')
    assert run.read_metrics() == [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}]


def test_an_epoch_written_twice_counts_once_the_last_record_winning(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text(
        '{"epoch": 1, "loss": 3.0}\n{"epoch": 2, "loss": 2.0}\n'  # killed after epoch 2
        '{"epoch": 2, "loss": 1.9}\n{"epoch": 3, "loss": 1.0}\n'
    )  # resumed from epoch 1's end
    assert run.read_metrics() == [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 1.9}, {"epoch": 3, "loss": 1.0}]


def test_lines_without_an_integer_epoch_are_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text(
        '{"epoch": "2", "a": 1}\n{"loss": 1.0}\n[1, 2]\nnull\n{"epoch": "x"}\n\n{"epoch": null}\n{"epoch": 1, "a": 0}\n'
    )
    assert run.read_metrics() == [{"epoch": 1, "a": 0}, {"epoch": 2, "a": 1}]  # "2" read as the epoch 2


def test_no_metrics_file_reads_as_no_records(tmp_path):
    assert RunDir(tmp_path / "nowhere").read_metrics() == []


def test_truncate_metrics_keeps_the_epochs_up_to_keep(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text(
        '{"epoch": 1, "loss": 3.0}\n{"epoch": 2, "loss": 2.0}\n{"epoch": 3, "loss": 1.0}\n'
        '{"epoch": 2, "loss": 1.5}\n{"epoch": 4, "lo'
    )
    run.truncate_metrics(2)
    # the lines as written (a repeated epoch stays repeated: the resume tests look for such doubles)
    assert (
        run.metrics.read_text() == '{"epoch": 1, "loss": 3.0}\n{"epoch": 2, "loss": 2.0}\n{"epoch": 2, "loss": 1.5}\n'
    )
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]  # rewritten atomically: no temp file left
    run.truncate_metrics(0)  # resuming from before the first epoch's end
    assert run.metrics.read_text() == "" and run.read_metrics() == []


def test_truncate_without_a_metrics_file_creates_none(tmp_path):
    run = RunDir(tmp_path)
    run.truncate_metrics(3)
    assert not run.metrics.exists()


# ---------------------------------------------------------------- a fresh start, weights, what a folder holds


def make_files(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_clear_started_removes_the_epoch_records_and_event_files_only(tmp_path):
    run = RunDir(tmp_path)
    make_files(
        tmp_path,
        [
            "metrics.jsonl",
            "tb/events.out.tfevents.1.host.1",
            "tb/events.out.tfevents.2.host.2",
            "tb/projector_config.pbtxt",
            "vocab.txt",
            "results.json",
            "checkpoints/last.pt",
            ".hydra/config.yaml",
            "notes.txt",
        ],
    )
    run.clear_started()
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        ".hydra/config.yaml",
        "checkpoints/last.pt",
        "notes.txt",
        "results.json",
        "tb/projector_config.pbtxt",
        "vocab.txt",
    ]
    run.clear_started()  # nothing left to clear is fine


def test_tb_events_are_the_event_files_in_name_order(tmp_path):
    make_files(tmp_path, ["tb/events.out.tfevents.2.b", "tb/events.out.tfevents.1.a", "tb/other", "tb/sub/x"])
    assert RunDir(tmp_path).tb_events() == [
        tmp_path / "tb" / "events.out.tfevents.1.a",
        tmp_path / "tb" / "events.out.tfevents.2.b",
    ]


@pytest.mark.parametrize(
    "present, expected",
    [
        ([], None),
        (["checkpoints/last.pt"], "checkpoints/last.pt"),
        (["checkpoints/best.pt"], "checkpoints/best.pt"),
        (["checkpoints/best.pt", "checkpoints/last.pt"], "checkpoints/best.pt"),
        (["checkpoints/last.prev.pt"], None),  # only the rotation copy: not weights to use
    ],
)
def test_weights_prefer_best_then_last_then_none(tmp_path, present, expected):
    make_files(tmp_path, present)
    assert RunDir(tmp_path).weights() == (tmp_path / expected if expected else None)


def test_weights_skip_a_folder_in_the_place_of_a_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "best.pt").mkdir(parents=True)
    make_files(tmp_path, ["checkpoints/last.pt"])
    assert RunDir(tmp_path).weights() == tmp_path / "checkpoints" / "last.pt"


@pytest.mark.parametrize(
    "files, folders, is_run, has_started",
    [
        ([], [], False, False),
        (["results.json"], [], True, True),  # a finished run
        ([], [".hydra"], True, False),  # started by Hydra, died before any checkpoint
        ([], ["checkpoints"], False, True),  # checkpoints, no Hydra record (train() called directly)
        (["metrics.jsonl", "notes.txt"], ["tb"], False, False),  # no results, record or checkpoints
        (["results.json"], [".hydra", "checkpoints"], True, True),
    ],
)
def test_is_run_and_has_started(tmp_path, files, folders, is_run, has_started):
    make_files(tmp_path, files)
    for folder in folders:
        (tmp_path / folder).mkdir()
    assert RunDir.is_run(tmp_path) is is_run
    assert RunDir.has_started(tmp_path) is has_started


def test_a_folder_that_does_not_exist_is_no_run(tmp_path):
    assert not RunDir.is_run(tmp_path / "nowhere") and not RunDir.has_started(tmp_path / "nowhere")


# ---------------------------------------------------------------- the rule: the names live in rundir.py only

RUN_DIR_NAMES = re.compile(r"results\.json|metrics\.jsonl|last\.pt|best\.pt|last\.prev\.pt")
ALLOWED = {"src/pbexp/rundir.py", "tests/test_rundir.py"}


def sources():
    """Every Python file of the source tree, the tests and the benches, and everything in scripts/."""
    for top, pattern in (("src", "*.py"), ("tests", "*.py"), ("benches", "*.py"), ("scripts", "*")):
        for path in sorted((REPO / top).rglob(pattern)):
            rel = path.relative_to(REPO).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and rel not in ALLOWED:
                yield rel, path


def test_no_source_file_outside_rundir_names_a_run_dir_file():
    """A file name written out anywhere else (a string, an f-string, a comment or a docstring) is a second
    place that knows the layout: ask RunDir (run.results, run.read_metrics(), run.last ...) instead."""
    scanned, offenders = 0, []
    for rel, path in sources():
        scanned += 1
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in RUN_DIR_NAMES.finditer(line):
                offenders.append(f"{rel}:{n}: {match.group()}: {line.strip()[:100]}")
    assert scanned > 20, f"found only {scanned} files under {REPO}: is REPO right?"
    assert not offenders, "run-dir file names outside src/pbexp/rundir.py (use RunDir):\n" + "\n".join(offenders)
