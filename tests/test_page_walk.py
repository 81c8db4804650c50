"""What a walk through the app in a browser, as a clinician and as a researcher, found wrong (AppTest)."""

from __future__ import annotations

import time
from pathlib import Path

from dermai import jobs
from tests.test_app_pages import alerts, app_env, assert_clean, copy_tiny_run, page  # noqa: F401 (fixture)


def cancelled_before_a_checkpoint(app_env: Path, name: str) -> Path:  # noqa: F811 (the fixture's value)
    """A run the user cancelled before it saved anything: a config, a manifest and a log, no weights or metrics."""
    run = copy_tiny_run(app_env, Path(jobs.runs_dir()) / name)
    for leftover in ("model.safetensors", "model.json", "metrics.jsonl"):
        (run / leftover).unlink(missing_ok=True)
    now = time.time()
    (run / jobs.LOG_NAME).write_text(
        f"--- dermai app: job {jobs.STARTED} 2026-12-07 15:23:21 (t={now - 20:.3f}) ---\n"
        f"--- dermai app: job {jobs.CANCELLED} 2026-12-07 15:23:34 (t={now - 10:.3f}) ---\n"
        "error: interrupted\n"
    )
    return run


def test_a_run_cancelled_before_its_weights_can_be_viewed_and_deleted(app_env: Path) -> None:  # noqa: F811
    copy_tiny_run(app_env, Path(jobs.runs_dir()) / "done")  # beside a finished run, as on a real runs folder
    run = cancelled_before_a_checkpoint(app_env, "cut")
    at = page("training").run()
    at.selectbox(key="train_run").set_value("cut").run()
    assert_clean(at)
    assert jobs.run_status(run).status == "stopped"
    assert "Cancelled by the user before it saved a checkpoint: there is nothing to resume." in alerts(at)
    labels = [b.label for b in at.button]
    assert "Delete cut" in labels  # the Delete popover's button: the only way to clear the run from the page
    assert not any("Predict" in label for label in labels), labels  # no weights: nothing to predict with
    next(b for b in at.button if b.label == "Delete cut").click()
    at.run()
    assert_clean(at)
    assert not run.exists()
    assert any(s.startswith("Deleted run cut") for s in alerts(at)), alerts(at)
