"""The Runs table parses each run's metrics.jsonl and job.log once per version of the file (`dermai.file_cache`),
and still shows on the next listing every change: records appended, an end record written, a job launched, a
trainer that took or let go of its folder's lock (its process died), a run folder deleted or renamed."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dermai import file_cache, jobs, run_status, run_table
from dermai.train import OWNER_FILE, job_event_line
from tests.test_jobs import held

HOUR_AGO = time.time() - 3600


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test starts and ends with nothing parsed (a file doctored here is never another test's)."""
    file_cache.clear()
    yield
    file_cache.clear()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many metrics.jsonl and job.log texts were parsed, by kind."""
    counts = {"metrics": 0, "log": 0}

    def counting(kind: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
        def wrapper(text: str) -> Any:
            counts[kind] += 1
            return parse(text)

        return wrapper

    monkeypatch.setattr(run_status, "parse_metrics", counting("metrics", run_status.parse_metrics))
    monkeypatch.setattr(run_status, "_events_in", counting("log", run_status._events_in))
    return counts


def epoch(n: int, at: float = HOUR_AGO) -> dict[str, Any]:
    """A fine-tuning epoch record (the n-th, 0-based) of a 3-epoch run."""
    return {"time": at + n, "kind": "epoch", "stage": "finetune", "epoch": n, "global_step": n + 1, "total_steps": 3}


def append(run: Path, record: dict[str, Any]) -> None:
    """Append a record as the trainer does (the file written now)."""
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def make_run(runs: Path, name: str, epochs: int = 1, end: str | None = None) -> Path:
    """A fine-tuning run the app launched an hour ago that trained `epochs` of 3 epochs and ended with status
    `end` (None: killed), with the lock file a trainer leaves (no process holds it) and its job log."""
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x" * 1000)
    train = {"image_size": 32, "pretrain_epochs": 0, "finetune_epochs": 3}
    (run / "config.json").write_text(json.dumps({"config": {"stage": "finetune", "train": train}}))
    for n in range(epochs):
        append(run, epoch(n))
    if end is not None:
        append(run, {"time": HOUR_AGO + 10, "kind": "status", "status": end, "weights": None, "best_score": None})
    started = f"--- dermai app: job {jobs.STARTED} an hour ago (t={HOUR_AGO - 60:.3f}) ---\n"  # the app launched it
    (run / jobs.LOG_NAME).write_text(f"{started}training\n")
    (run / OWNER_FILE).write_text("")
    for path in (run / OWNER_FILE, run / jobs.LOG_NAME, run / "metrics.jsonl"):
        os.utime(path, (HOUR_AGO - 60, HOUR_AGO - 60))  # a trainer that took its lock, then wrote its records
    return run


def listed(runs: Path) -> pd.DataFrame:
    """The Runs table by run name."""
    return run_table.list_runs(runs).set_index("name")


def test_a_second_listing_parses_no_metrics_file_or_log_again(tmp_path: Path, parses: dict[str, int]) -> None:
    runs = tmp_path / "runs"
    for name, end in (("done", "finished"), ("halted", "stopped"), ("killed", None)):
        make_run(runs, name, 3 if end == "finished" else 1, end)
    first = run_table.list_runs(runs)
    assert parses == {"metrics": 3, "log": 3}
    again = run_table.list_runs(runs)
    assert parses == {"metrics": 3, "log": 3}  # nothing changed on disk: nothing parsed again
    pd.testing.assert_frame_equal(first, again)
    assert dict(zip(again["name"], again["status"], strict=True)) == {
        "done": "finished",
        "halted": "stopped",
        "killed": "interrupted",
    }
    run_status.run_status(runs / "done", runs)  # the live view and the chosen run's status line share it
    assert parses == {"metrics": 3, "log": 3}


def test_records_appended_and_an_end_record_show_on_the_next_listing(tmp_path: Path, parses: dict[str, int]) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs, "run")
    assert listed(runs).loc["run", "epochs"] == "1/3"
    append(run, epoch(1))
    assert listed(runs).loc["run", "epochs"] == "2/3" and parses["metrics"] == 2
    assert listed(runs).loc["run", "status"] == "interrupted"
    append(run, {"time": time.time(), "kind": "status", "status": "stopped", "weights": None, "best_score": None})
    assert listed(runs).loc["run", "status"] == "stopped"
    append(run, epoch(2))  # resumed from the command line with a trainer of a version that takes no lock
    (run / OWNER_FILE).unlink()
    assert listed(runs).loc["run", "status"] == "running"  # still writing: its records are this recent
    append(run, {"time": time.time(), "kind": "status", "status": "finished", "weights": None, "best_score": None})
    row = listed(runs).loc["run"]
    assert (row["status"], row["epochs"]) == ("finished", "3/3")


def test_a_trainer_taking_and_letting_go_of_the_lock_shows_with_no_file_changed(
    tmp_path: Path, parses: dict[str, int]
) -> None:
    """Whether a run is running is asked on every listing: its files are the same before and after its process
    dies, and the cached parse of them must not keep it "running"."""
    runs = tmp_path / "runs"
    run = make_run(runs, "run", end="stopped")
    assert listed(runs).loc["run", "status"] == "stopped"
    holder = held(run)  # a command-line resume: it takes the folder's lock, writes nothing yet
    try:
        assert listed(runs).loc["run", "status"] == "running"
        assert run_table.run_row(run, runs)["status"] == "running"  # the page's refresh of the running row
    finally:
        holder.kill()
        holder.wait()
    parsed = dict(parses)
    row = listed(runs).loc["run"]
    assert row["status"] == "interrupted" and row["note"].startswith("A trainer started outside the app")
    assert parses == parsed  # the same files: nothing parsed again, and the status still changed


def test_a_job_launched_on_a_stopped_run_that_dies_shows_as_interrupted(tmp_path: Path) -> None:
    """Resume writes its "started" line in job.log; a job that died before writing a record of its own leaves
    only that line: the log's new version is read (its first launch, before the end record, is the one its
    parse kept), and the run is interrupted, no longer stopped."""
    runs = tmp_path / "runs"
    run = make_run(runs, "run", end="stopped")
    assert listed(runs).loc["run", "status"] == "stopped"
    with open(run / jobs.LOG_NAME, "a") as handle:
        handle.write(job_event_line(jobs.STARTED).decode())
    row = listed(runs).loc["run"]
    assert row["status"] == "interrupted" and row["note"].startswith("Its last job ended without finishing")


def test_a_deleted_or_renamed_run_shows_as_it_is_now(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "gone", end="stopped")
    make_run(runs, "old", 3, end="finished")
    assert sorted(listed(runs).index) == ["gone", "old"]
    shutil.rmtree(runs / "gone")
    (runs / "old").rename(runs / "new")
    table = listed(runs)
    assert list(table.index) == ["new"]
    assert (table.loc["new", "path"], table.loc["new", "status"]) == (str(runs / "new"), "finished")
    assert run_table.run_row(runs / "gone", runs) is None  # the page's refresh of a row that went away
    # A new run under a deleted run's name, written within the same second: its own records, not the old one's.
    again = make_run(runs, "gone", 2)
    assert (again / "metrics.jsonl").stat().st_size != 0
    row = listed(runs).loc["gone"]
    assert (row["status"], row["epochs"]) == ("interrupted", "2/3")


def test_a_file_rewritten_to_the_same_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    """`cp -p` or `touch -d` can give a changed file its old mtime back; its ctime cannot be set back."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n')
    before = path.stat()
    assert file_cache.parsed(path, json.loads) == {"a": 1}
    time.sleep(0.05)  # past the file system's clock tick (a few ms), as any later write is in practice
    path.write_text('{"a": 2}\n')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert file_cache.parsed(path, json.loads) == {"a": 2}


def test_the_cache_is_bounded_and_keeps_the_most_recently_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_cache, "MAX_ENTRIES", 2)
    calls: list[str] = []

    def parse(text: str) -> str:
        calls.append(text)
        return text

    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    for name in ("a", "b", "a", "c", "a", "b"):  # c pushes out b (a was read since); b is read again
        assert file_cache.parsed(tmp_path / name, parse) == name
    assert calls == ["a", "b", "c", "b"] and len(file_cache._entries) == 2
    with pytest.raises(FileNotFoundError):
        file_cache.parsed(tmp_path / "missing", parse)


def test_the_benchmarks_synthetic_runs_read_as_the_runs_they_stand_for(tmp_path: Path) -> None:
    """bench/page_render.py --synthetic-runs times the listing of these folders: each must read as its kind."""
    from bench.synthetic_runs import build_runs

    table = run_table.list_runs(build_runs(tmp_path / "runs", 10, checkpoint_mb=1))
    assert table["status"].value_counts().to_dict() == {
        "finished": 6,
        "stopped": 1,
        "interrupted": 1,
        "failed": 1,
        "not started": 1,
    }
    assert table["problem"].notna().sum() == 1  # the failed job's log line, no unreadable folder
    finished = table[table["status"] == "finished"]
    assert all(done == planned for done, planned in finished["epochs"].str.split("/"))
