"""The Training page's runs: their status lines, the run table and comparison, which weights a run gives Predict
and the current job's control. The page lays these out; dermai.jobs runs the jobs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dermai.data import same_file
from dermai.ui.sidebar_state import weights_path
from dermai.ui.training_form import TRAIN_FORM_LABELS
from dermai.ui.weights_menu import default_model_label


def current_job_control(ensemble: bool, trained: bool, outside: bool) -> str | None:
    """The label of the one button that ends the job under Training's "Current job": "Cancel this job" for an
    ensemble, "Stop" once training has begun, "Cancel" while its data is still being prepared; None where the
    app cannot end it (a command-line ensemble: it reads no STOP file and the app kills no process it did not
    start). A command-line trainer gets "Stop" while it prepares its data too: it reads its STOP file then and
    ends before it trains (`train.Trainer._prepare`)."""
    if ensemble:
        return None if outside else "Cancel this job"
    if trained or outside:
        return "Stop"
    return "Cancel"


# The help of "Stop" under "Current job" once the job trains.
TRAINING_STOP_HELP = "Ends after the current step with a checkpoint; resume it later"
# The help of "Stop" under "Current job" for a command-line run still preparing its data.
PREPARING_STOP_HELP = (
    "Ends the run before training starts: nothing is trained yet, and a half-decoded pixel cache is not kept "
    "(the next run at this size decodes it again)"
)
# The same for a resumed run preparing its data again: its STOP ends it before it trains, with no new checkpoint.
RESUMED_PREPARING_STOP_HELP = (
    "Ends the run before it trains again: its last checkpoint stays as it is (resume it later), and a "
    "half-decoded pixel cache is not kept"
)
# The help of "Cancel" for a job the app launched that still prepares its data: a new run, or a resumed one.
PREPARING_CANCEL_HELP = "Nothing is trained yet: end the job now"
RESUMED_CANCEL_HELP = (
    "Nothing is trained in this job yet: end it now; the run keeps its last checkpoint (resume it later)"
)


def preparing_help(control: str, resumed: bool) -> str:
    """The help of the control `current_job_control` gives a job still preparing its data: a resumed run (one with
    earlier jobs' records) keeps its checkpoint either way, where a new one has nothing trained to keep."""
    if control == "Stop":
        return RESUMED_PREPARING_STOP_HELP if resumed else PREPARING_STOP_HELP
    return RESUMED_CANCEL_HELP if resumed else PREPARING_CANCEL_HELP


def current_job_hint(control: str | None) -> str:
    """What the Runs list says of the run that is the current job, naming the button that `current_job_control`
    put under "Current job" (it said "stop it" beside a button labelled "Cancel" while data was prepared)."""
    if control == "Stop":
        return "It is the current job: stop it under “Current job” above."
    if control is None:
        return "It is the current job, started from the command line: “Current job” above says how to end it."
    return f"It is the current job: cancel it with “{control}” under “Current job” above."


# Compare runs' settings (`compare.run_settings`: config.json's dotted keys) that the Training form sets, by the
# form's labels; other settings (augmentation, a config file's) keep their key.
SETTING_LABELS: dict[str, str] = {
    "stage": TRAIN_FORM_LABELS["stage"],
    "data.seed": TRAIN_FORM_LABELS["seed"],
    "data.limit": TRAIN_FORM_LABELS["limit"],
    "data.label_fraction": TRAIN_FORM_LABELS["label_fraction"],
    **{
        f"train.{field}": label
        for field, label in TRAIN_FORM_LABELS.items()
        if field not in ("stage", "seed", "limit", "label_fraction")
    },
    "train.seed": "Training seed (blank = Seed)",
    "start.init_weights": "Start from",
    "start.reset_classifier": "Fresh classifier",
}
SETTING_KEY_COLUMN = "config key"


def labelled_differences(differences: pd.DataFrame) -> pd.DataFrame:
    """`compare.setting_differences` as Compare runs shows it: each setting by the Training form's label where
    the form has it (“Learning rate”, not train.lr), else by its key; the key stays in a last column, as
    config.json names it."""
    table = differences.copy()
    table[SETTING_KEY_COLUMN] = list(differences.index)
    table.index = pd.Index([SETTING_LABELS.get(key, key) for key in differences.index], name="setting")
    return table


# The Training page's two buttons that hand weights to Predict: short, so they show whole in a narrow window
# ("Use these weights for prediction" was cut even at 1280 px); their help says the rest.
USE_RUN_WEIGHTS = "Use for Predict"
USE_DEFAULT_WEIGHTS = "Use default model"


def run_weights(row: pd.Series) -> str | None:
    """A `run_table.list_runs` row's weights file, or None for a run that saved none (cancelled before its first
    checkpoint, failed at its start). pandas stores that missing path as NaN, a float that is truthy, once another
    row has weights: read as a path it crashed the Training page below the run's status, its Delete button too."""
    weights = row.get("weights")
    return weights if isinstance(weights, str) and weights else None


def uses_weights(state: Mapping[str, Any], path: str | os.PathLike[str]) -> bool:
    """Whether the session's weights (what Predict uses) are the file `path`, however either path is written."""
    return same_file(weights_path(state), path)


def weights_used_note(run: str, path: str | os.PathLike[str]) -> str:
    """The confirmation after `USE_RUN_WEIGHTS`: which weights the pages now use, and how to go back, since the
    change outlives the Training page (every page and the sidebar follow it). The page shows it above the
    buttons, so the way back is "below"."""
    return (
        f"Predict, Evaluation and Home now use run {run}'s weights ({path}); the sidebar's Weights list shows "
        f"them. To go back to {default_model_label()}, press “{USE_DEFAULT_WEIGHTS}” below, or choose it in "
        "the sidebar."
    )


def _known(value: Any) -> bool:
    """Whether a run-table field says something: a run still starting (or from another layout) has no stage,
    epochs or input size yet, and "stage None · epochs ·" read as a broken page."""
    return value is not None and not (isinstance(value, float) and value != value) and str(value).strip() != ""


def status_line(row: Mapping[str, Any]) -> str:
    """A `run_table.list_runs` row as the Training page's one-line summary of the chosen run: its status, then only
    the stage, epochs (completed/planned, `run_table.stage_epochs`) and input size it knows, and its size on disk."""
    parts = [f"Status: **{row['status']}**"]
    parts += [
        f"{label} {row[key]}"
        for label, key in (("stage", "stage"), ("epochs", "epochs"), ("input", "input"))
        if _known(row[key])
    ]
    parts.append(f"{row['disk_gb']:.2f} GB on disk")
    return " · ".join(parts)


# The compared figures as Evaluation's compare table names them: short, so that its columns fit an 800 px window
# ("Balanced accuracy (7-class)" took a quarter of it and pushed the interval and the verdict off); the column's
# help says what each is.
COMPARED_METRICS = {"auroc": "AUROC", "balanced_accuracy": "Bal. acc."}


def comparison_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """`evaluate.compare_weights`' result as Evaluation's table: per figure A, B, B − A, its 95% interval, p and
    the verdict in words; a figure the result lacks (too few images of a class) is left out."""
    from dermai.evaluate import comparison_verdict  # as score is: torch's import only where scoring is shown

    rows = []
    for name, label in COMPARED_METRICS.items():
        if paired := result.get(name):
            low, high = paired.get("difference_ci") or [None, None]
            rows.append(
                {
                    "metric": label,
                    "A": paired["a"],
                    "B": paired["b"],
                    "B − A": paired["difference"],
                    "95% CI low": low,
                    "95% CI high": high,
                    "p": paired.get("p_value"),
                    "verdict": comparison_verdict(dict(paired)),
                }
            )
    return pd.DataFrame(rows, columns=["metric", "A", "B", "B − A", "95% CI low", "95% CI high", "p", "verdict"])


def epoch_words(stage: str, epoch: int | None, planned: int | None = None) -> str:
    """Where a running job is, for people: "finetune, epoch 1 of 6" while its first epoch trains. `epoch` is
    the trainer's 0-based index (metrics.jsonl keeps it), so it is shown plus one, as the curves'
    x-axis and the Runs table's completed/planned ("finetune 0/6") count; a dash while no step has been logged."""
    if epoch is None:
        return f"{stage}, epoch -"
    return f"{stage}, epoch {epoch + 1}" + (f" of {planned}" if planned else "")


def shown_run_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """`compare.compare_runs`' summary as Compare runs shows it: the best epoch numbered from 1, as the curves
    beside it are (`plots.one_based_epochs`); the summary itself keeps metrics.jsonl's 0-based index."""
    return summary.assign(best_epoch=summary["best_epoch"] + 1)
