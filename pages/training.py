"""Training: launch a run in its own process, watch it live, stop or resume it, browse past runs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dermai import disk_space, jobs, run_deletion, run_status, run_table
from dermai.compare import compare_runs
from dermai.data import same_file
from dermai.ensemble import parse_image_sizes
from dermai.inference import machine_compute
from dermai.plots import (
    compare_runs_figure,
    compare_runs_summary,
    has_training_curves,
    training_curves_figure,
    training_curves_summary,
)
from dermai.train import read_metrics
from dermai.ui import formatting, runs_view, sidebar_state, training_form, weights_menu, widget_state
from dermai.ui.weights_menu import serving_summary
from dermai.ui.widget_state import TRAIN_AUGMENT_KEYS
from dermai.weights import calibration_failure, temperature_at_bound
from pages._common import data_dir, describe_chart, plain_errors, set_weights

st.title("Training")
runs = jobs.runs_dir()
st.caption(
    f"Runs folder {formatting.code_span(str(runs))} · one training job at a time on this machine · data "
    f"{formatting.code_span(data_dir() or '(none)')}"
)
STAGES = ["both", "pretrain", "finetune"]
RANDOM_START = "random initialisation"
history = run_table.list_runs(runs)  # read once per render: the start, teacher and ensemble lists and the Runs table
start_choices = run_table.finished_weights(table=history)  # {label: weights path}
NO_TEACHER = "none"
teacher_choices = run_table.teacher_choices(table=history)  # {label: weights path}
START_WIDGETS = {"train_training_seed": None, "train_reset_classifier": None}  # beside "start_from"

state = st.session_state
# A run's name as markdown shows it literally: a folder made outside the app (train --out) may have any name.
plain = formatting.markdown_plain
training_form.init_train_form(state)  # what was set before another page was shown (e.g. the Augmentation lab)


def _preset() -> None:
    training_form.apply_train_preset(state, state["train_preset"])


def _form_words(message: str) -> str:
    """A refusal in the page's words: the form's labels for fields, the sidebar for the data folder."""
    return training_form.in_form_words(sidebar_state.sidebar_words(message))


@st.fragment
def train_form() -> None:
    """The run's settings. A fragment, so editing a field reruns only this part (not the runs table below);
    the fields keep their values when another page is shown, e.g. the Augmentation lab."""
    compute = machine_compute()
    st.selectbox(
        "Fill the form from",
        list(training_form.TRAIN_PRESETS),
        format_func=lambda preset: training_form.preset_label(preset, *compute),
        index=None,
        placeholder="a recipe (optional): the paper's defaults, the CPU steps of the shipped model, a quick check",
        key="train_preset",
        on_change=_preset,
        help="Sets every field below to the paper's defaults changed by that recipe; edit any field after. The "
        "CPU steps make the shipped model's first member (its second member and the ensemble: "
        "scripts/train_default.sh, weights/MODEL_CARD.md); their times are for this machine, from runs on a 2-core "
        "CPU with bf16. For step 2, choose step 1's run under “Start from a finished run”.",
    )
    if edited := training_form.preset_edit_note(state, state.get("train_preset")):
        st.caption(edited)
    st.caption(training_form.training_speed_note(*compute))
    with st.container(border=True):
        _fields()


def _fields() -> None:
    """The fields, the Start button, and the start itself (with the Augmentation lab's settings)."""
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox(
        "Stage", STAGES, key=training_form.train_field_key("stage"), help="both = SimCLR pretraining, then fine-tuning"
    )
    c1.number_input("Pretrain epochs", 0, 1000, key=training_form.train_field_key("pretrain_epochs"))
    c1.number_input("Finetune epochs", 0, 1000, key=training_form.train_field_key("finetune_epochs"))
    c2.number_input("Batch size", 2, 1024, key=training_form.train_field_key("batch_size"))
    c2.number_input(
        "Image size (px)",
        32,
        512,
        step=32,
        key=training_form.train_field_key("image_size"),
        help="the input's height, and its width unless one is given below",
    )
    c2.number_input(
        "Image width (px, 0 = square)",
        0,
        1024,
        step=32,
        key=training_form.train_field_key("image_width"),
        help="0 squashes every image to a square of the image size, as the paper does; HAM10000's images are 4:3, "
        "so e.g. 120 × 160 keeps their shape",
    )
    c2.number_input(
        "Label fraction", 0.001, 1.0, step=0.01, format="%.3f", key=training_form.train_field_key("label_fraction")
    )
    c3.number_input("λ (NT-Xent weight)", 0.0, 10.0, step=0.1, key=training_form.train_field_key("lambda_ntxent"))
    c3.number_input("Temperature τ", 0.01, 5.0, step=0.05, key=training_form.train_field_key("temperature"))
    c3.number_input("Learning rate", 1e-6, 1.0, step=1e-4, format="%.5f", key=training_form.train_field_key("lr"))
    c4.number_input("Seed", 0, 2**31 - 1, key=training_form.train_field_key("seed"))
    c4.number_input(
        "Limit images (0 = all)",
        0,
        100_000,
        key=training_form.train_field_key("limit"),
        help="a stratified subset, for quick runs",
    )
    widget_state.restore_widgets(state, {"train_run_name": None})
    name = c4.text_input("Run name (optional)", help="default: date-time-stage", key="train_run_name")
    with st.expander("Optimisation, regularisation and weight averaging"):
        e1, e2, e3 = st.columns(3)
        e1.number_input(
            "Weight decay", 0.0, 1.0, step=1e-4, format="%.5f", key=training_form.train_field_key("weight_decay")
        )
        e1.number_input("Warm-up epochs", 0.0, 100.0, step=0.5, key=training_form.train_field_key("warmup_epochs"))
        e2.number_input("Label smoothing", 0.0, 0.5, step=0.05, key=training_form.train_field_key("label_smoothing"))
        e2.number_input(
            "Focal loss γ (0 = off)",
            0.0,
            10.0,
            step=0.5,
            key=training_form.train_field_key("focal_gamma"),
            help="Fine-tuning scales each image's cross-entropy by (1 − p)^γ, p the probability of its label: "
            "images already learnt count less, the hard ones more",
        )
        e2.number_input(
            "Lesion-mask loss weight (0 = off)",
            0.0,
            10.0,
            step=0.1,
            key=training_form.train_field_key("mask_weight"),
            help="Fine-tuning also learns where the lesion is, from the dataset's lesion masks "
            "(<data>/masks/<image_id>_segmentation.png, as HAM10000 has): a training-only head on the last "
            "feature map, not part of the saved model",
        )
        e2.number_input(
            "MixUp α (0 = off)",
            0.0,
            10.0,
            step=0.1,
            key=training_form.train_field_key("mixup_alpha"),
            help="Fine-tuning blends each image and its label with another's, by a weight drawn from Beta(α, α)",
        )
        e2.number_input(
            "CutMix α (0 = off)",
            0.0,
            10.0,
            step=0.1,
            key=training_form.train_field_key("cutmix_alpha"),
            help="Fine-tuning pastes a box of another image, labels mixed by area; with MixUp on too, each batch "
            "uses one of the two",
        )
        e3.number_input(
            "SWA epochs (0 = off)",
            0,
            1000,
            key=training_form.train_field_key("swa_epochs"),
            help="Average the weights of the last N fine-tuning epochs; the average is kept if it scores best "
            "on validation",
        )
        e3.number_input(
            "SWA learning rate (0 = cosine)",
            0.0,
            1.0,
            step=1e-4,
            format="%.5f",
            key=training_form.train_field_key("swa_lr"),
            help="A constant learning rate for the averaged epochs; 0 lets the cosine schedule run on",
        )
    # Kept across pages like the fields above: a run deleted meanwhile is no longer offered, so not restored.
    widget_state.restore_widgets(state, {**START_WIDGETS, "start_from": [RANDOM_START, *start_choices]})
    widget_state.restore_widgets(state, {"distill_teacher": [NO_TEACHER, *teacher_choices]})
    with st.expander("Start from a finished run"):
        i1, i2 = st.columns([2, 1])
        start_from = i1.selectbox(
            "Start from",
            [RANDOM_START, *start_choices],
            key="start_from",
            help="Fine-tune a pretraining run's trunk, or train a fine-tuned run further. Keep its Seed and "
            "Limit: weights trained on another split have seen this split's validation or test images and "
            "are refused.",
        )
        train_seed = i2.number_input(
            "Training seed (blank = Seed)",
            0,
            2**31 - 1,
            None,
            key="train_training_seed",
            help="Seed of initialisation, sampling and augmentation only; the split stays Seed's. A new value "
            "trains a different model on the same split (an ensemble member).",
        )
        reset_classifier = i2.checkbox(
            "Fresh classifier",
            key="train_reset_classifier",
            help="From a fine-tuned run: keep its trunk and draw a new classifier (for an ensemble member)",
        )
    with st.expander("Learn from a teacher (distillation)"):
        t1, t2 = st.columns([2, 1])
        teacher = t1.selectbox(
            "Teacher",
            [NO_TEACHER, *teacher_choices],
            key="distill_teacher",
            help="Fine-tuning also learns the teacher's class probabilities for each training image: a cheaper "
            "model can pick up what a costlier ensemble knows. The teacher must share this run's Seed and Limit.",
        )
        t2.number_input(
            "Teacher's share w (0 = off)",
            0.0,
            1.0,
            step=0.1,
            key=training_form.train_field_key("distill_weight"),
            help="Each fine-tuning target is (1 − w) × the label + w × the teacher's probabilities",
        )
    with st.expander("Augmentation"):
        for preset, pipeline in (("paper", "Fine-tuning"), ("simclr", "SimCLR pretraining")):
            changed = st.session_state.get(TRAIN_AUGMENT_KEYS[preset]) or []
            st.write(f"{pipeline}: " + (", ".join(f"`{item}`" for item in changed) or "the defaults"))
        st.caption(
            "Set them in the Augmentation lab: preview, then “Use for …” (on the defaults, that restores them). "
            "They apply to runs started from here on."
        )
    training_form.keep_train_form(state)
    widget_state.keep_widgets(state, ["train_run_name", "start_from", "distill_teacher", *START_WIDGETS])
    if not st.button("Start training", type="primary"):
        return
    refused = training_form.name_refusal(name.strip(), "run name") if name.strip() else None  # the name escaped
    if refused:
        st.error(f"Not started: {refused}")
        return
    stage, options = training_form.train_form_options(state)
    options.update(
        data=data_dir() or None,
        init_weights=start_choices.get(start_from),
        distill_from=teacher_choices.get(teacher),
        train_seed=train_seed,
        reset_classifier=reset_classifier,
        augment=state.get(TRAIN_AUGMENT_KEYS["paper"]) or None,
        simclr_augment=state.get(TRAIN_AUGMENT_KEYS["simclr"]) or None,
    )
    with plain_errors("Not started", _form_words), st.spinner("Checking the data folder and the chosen weights…"):
        job = jobs.start_job(stage, options, runs, name=name.strip() or None)
        state["train_started"] = f"Started run {job.name} (pid {job.pid})."
        state["train_run"] = job.name  # the run shown under Runs: the new one, not the one chosen before
        st.rerun()  # the whole page: the runs table lists the new run


train_form()
if started := state.pop("train_started", None):
    st.success(started)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}h {minutes:02d}m" if hours else f"ETA {minutes}m {secs:02d}s"


REFRESH_S = 2  # seconds between reads of a running job's files


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    """The running job, refreshed every 2 s from the lock file and its metrics (not from this session); else a
    run training from the command line in the runs folder, which holds this machine as a job does."""
    st.subheader("Current job")
    job = jobs.current_job(runs)
    outside = jobs.command_line_runs(runs) if job is None else []
    holder = ""
    if outside:
        folder, holder = outside[0]
        st.caption(f"Started from the command line ({holder}): a job started here is refused until it ends.")
        job = jobs.Job(-1, str(folder), run_status.recorded_stage(folder) or "", [], 0.0)  # no lock record: its config
    if job is None or not job.run_dir or job.run_dir == jobs.STARTING:
        st.info("No training job is running." if job is None else "A job is starting…")
        if st.session_state.pop("train_watching", None):
            st.rerun()  # the job just ended: refresh the history below
        return
    st.session_state["train_watching"] = job.run_dir
    status = run_status.run_status(job.run_dir, runs)
    stage = status.stage or job.stage or "stage not yet recorded"  # its metrics, else its lock or config
    where = runs_view.epoch_words(stage, status.epoch, run_status.planned_epochs(job.run_dir, stage))
    records = read_metrics(job.run_dir)
    # A resumed run's earlier jobs wrote records: it trains only once its own trainer has logged a step.
    trained = run_status.trained_this_job(job.run_dir, records)
    eta = _eta(status.eta_s if trained else None)  # an earlier job's ETA is none of this one's
    st.progress(status.progress, text=f"{plain(job.name)}: {where} · {status.progress:.0%} · {eta}")
    # The one stop control of the running job (the Runs list below points here rather than repeat it, by name).
    control = runs_view.current_job_control(job.stage == jobs.ENSEMBLE_STAGE, trained, bool(outside))
    if st.session_state.get("train_live_control", control) != control:  # e.g. data prepared: Cancel became Stop
        st.session_state["train_live_control"] = control
        st.rerun()  # the whole page: the Runs list's hint names the new button
    st.session_state["train_live_control"] = control
    if job.stage == jobs.ENSEMBLE_STAGE:  # it reads no STOP file, metrics or not: end its process instead
        st.caption("Combining the runs and fitting the ensemble's calibration on the validation split…")
        if control is None:  # cancel_job ends only a process this app started (the lock's): say how to end this one
            kill = f" or run `kill {holder.removeprefix('pid ')}`" if holder.startswith("pid ") else ""
            st.caption(
                "An ensemble reads no STOP file and this one was not started here, so the app cannot end it: press "
                f"Ctrl+C in its terminal{kill}; its half-made files are removed."
            )
        elif st.button(control, help="End the job now; the ensemble's half-made files are removed"):
            cancelled = jobs.cancel_job(runs, job.run_dir)
            st.toast("Job cancelled." if cancelled else "That job is no longer running.")
    elif trained:
        if st.button("Stop", help=runs_view.TRAINING_STOP_HELP):
            jobs.stop_job(job.run_dir)
            st.toast("Stop requested: the run will checkpoint and end.")
        live_curves(records)
    else:  # a new run, or a resumed one preparing its data again (its STOP then ends it before it trains)
        st.caption("Preparing data (the first run at a new image size decodes the pixel cache)…")
        help_text = runs_view.preparing_help(control or "", resumed=bool(records))
        if control == "Stop":  # a command-line run: its STOP file ends it before it trains (the app kills no process)
            if st.button(control, help=help_text):
                jobs.stop_job(job.run_dir)
                st.toast("Stop requested: the run will end before training starts.")
        elif control and st.button(control, help=help_text):
            jobs.cancel_job(runs, job.run_dir)
            st.toast("Job cancelled.")
        if has_training_curves(records):  # a resumed run's earlier jobs' curves
            live_curves(records)


def live_curves(records: list[dict[str, Any]]) -> None:
    """The running job's curves and their summary, in the live fragment: refreshed with it."""
    st.plotly_chart(training_curves_figure(records), width="stretch", key="live_curves")
    describe_chart(st, training_curves_summary(records))


live()

st.subheader("Runs")
for said in ("train_deleted", "train_resumed"):  # said after the rerun that follows a deletion or a resume
    if said in state:
        st.success(state.pop(said))
if history.empty:
    st.info("No runs yet.")
    st.stop()


def runs_table() -> None:
    """The runs' disk use and table; while a run trains they are read afresh each refresh (listed once as it
    started, it read "running · — · 0.00 GB" until the page was reloaded)."""
    table = run_table.list_runs(runs) if running else history
    if table.empty:
        return
    st.caption(
        f"{len(table)} {'run takes' if len(table) == 1 else 'runs take'} {table['disk_gb'].sum():.1f} GB; "
        f"{disk_space.free_bytes(runs) / 1e9:.1f} GB free on their disk. A job is refused below 1 GB free: delete runs "
        "you no longer need (choose one below)."
    )
    st.dataframe(
        table[run_table.shown_run_columns(table)],
        hide_index=True,
        width="stretch",
        placeholder=formatting.MISSING,  # a stopped run has no best AUROC: a dash, not the word "None"
        column_config={
            "epochs": st.column_config.TextColumn(
                "epochs", help="completed / planned, per stage: a stopped run shows how far it got"
            ),
            "best_val_auroc": st.column_config.NumberColumn(
                "best val AUROC",
                format="%.3f",
                help="the best epoch's validation AUROC as training measured it; the run's 'As served' figure, "
                "after calibration on the same split, can differ: a little on a large validation split, by much "
                "on a small one (a Quick check's few dozen images)",
            ),
            "disk_gb": st.column_config.NumberColumn("GB on disk", format="%.2f"),
        },
    )


running = bool((history["status"] == "running").any())
st.fragment(runs_table, run_every=REFRESH_S if running else None)()

with st.expander("Compare runs"):
    st.caption(
        "Validation curves side by side, each run's best epoch, and only the settings that differ. A stochastic "
        "weight average (SWA) belongs to no epoch: it has its own row and a star after the epochs it averaged."
    )
    trained = run_table.comparable_runs(history)
    compared = st.multiselect("Runs", list(trained["name"]), key="compare_runs")
    if compared:
        folders = dict(zip(trained["name"], trained["path"], strict=True))
        with plain_errors("Cannot compare"):
            records = {name: read_metrics(folders[name]) for name in compared}  # read once: table and curves
            summary, differences = compare_runs({name: folders[name] for name in compared}, records)
            key = st.radio("Curve", ["val_auroc", "val_bacc", "val_acc"], horizontal=True, key="compare_key")
            st.plotly_chart(compare_runs_figure(records, key), width="stretch", key="compare_curves")
            describe_chart(st, compare_runs_summary(records, key))
            st.dataframe(
                runs_view.shown_run_summary(summary),
                hide_index=True,
                width="stretch",
                placeholder=formatting.MISSING,
                column_config={
                    "best_val_auroc": st.column_config.NumberColumn(
                        "best val AUROC", format="%.4f", help="a weight average's row: the average's val AUROC"
                    ),
                    "best_epoch": st.column_config.NumberColumn(
                        "best epoch", help="the epoch of the best val AUROC, counted from 1 as the curves are"
                    ),
                    "epochs_run": st.column_config.NumberColumn(
                        "epochs validated", help="the stage's epochs with a validation AUROC"
                    ),
                    "val_bacc_at_best": st.column_config.NumberColumn("val bal. acc. there", format="%.3f"),
                    "images_per_s": st.column_config.NumberColumn("images/s", format="%.0f"),
                },
            )
            if len(compared) > 1 and differences.empty:
                st.caption("These runs have the same settings.")
            elif len(compared) > 1:
                n = len(differences)
                st.caption(f"{n} setting{'s differ' if n > 1 else ' differs'}:")
                st.dataframe(
                    runs_view.labelled_differences(differences),
                    width="stretch",
                    placeholder=formatting.MISSING,
                    column_config={
                        runs_view.SETTING_KEY_COLUMN: st.column_config.TextColumn(
                            help="the setting's name in the run's config.json"
                        )
                    },
                )

with st.expander("Combine runs into an ensemble"):
    st.caption(
        "Fine-tuned runs on the same split, served as one model: their logits are averaged, then temperature, "
        "triage tiers and the OOD gate are fitted on validation. Train members with different training seeds "
        "(and a fresh classifier when they start from one fine-tuned run)."
    )
    with st.form("ensemble_form"):
        candidates = run_table.finished_weights(fine_tuned=True, table=history)
        members = st.multiselect("Members (two or more)", list(candidates), key="ensemble_members")
        ensemble_name = st.text_input("Ensemble name (optional)", help="default: date-time-ensemble")
        sizes_text = st.text_input(
            "Input sizes (optional)",
            placeholder="e.g. 96, 120",
            help="One size in pixels per member, in the order chosen above; default: the size each was trained "
            "at. A member trained on random crops may score better a little above its training size.",
        )
        if st.form_submit_button("Build ensemble"):
            typed = ensemble_name.strip()
            refused = training_form.name_refusal(typed, "ensemble name") if typed else None  # the name escaped
            if refused:
                st.error(f"Not started: {refused}")
            else:
                with plain_errors("Not started"):
                    job = jobs.start_ensemble_job(
                        [candidates[m] for m in members],
                        runs,
                        typed or None,
                        data_dir() or None,
                        image_sizes=parse_image_sizes(sizes_text) if sizes_text.strip() else None,
                    )
                    st.success(f"Building ensemble {job.name} (pid {job.pid}).")


def delete_popover(where: Any, name: str, path: str, disk_gb: float) -> None:
    """A "Delete run" popover in `where` that asks once more before deleting the folder for good, saying which
    runs started from or learn from it and what deleting it does to them."""
    with where.popover("Delete run"):
        st.markdown(
            f"Deletes {formatting.code_span(str(path))} ({disk_gb:.2f} GB): its weights, checkpoints, metrics and log. "
            "It cannot be undone. Ensembles built from it keep working (they hold their own copy of its weights)."
        )
        dependents = run_deletion.dependent_runs(path, runs)
        if dependents:
            st.warning(
                "Other runs use its weights:\n\n" + "\n".join(f"- {d.consequence()}" for d in dependents),
            )
        if st.button(f"Delete {plain(name)}", type="primary", key="delete_run_confirm"):
            with plain_errors("Not deleted"):
                freed = run_deletion.delete_run(path, runs)
                sidebar_state.forget_weights_in(state, path)
                state["train_deleted"] = f"Deleted run {plain(name)}: {freed / 1e9:.2f} GB freed."
                st.rerun()


def _figure(value: Any, digits: int) -> str:
    """A served figure, or a dash where the calibration record has none (an older version's, a None AUROC)."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) else formatting.MISSING


def _bound_warning(serving: dict[str, Any]) -> str:
    """Why the served figures are not a calibration, with the validation images it had when the record says."""
    failure = calibration_failure(serving["temperature"], serving.get("n_val"))
    return f"{failure}; the temperature and the ECE change below are not a calibration."


def show_serving(serving: dict[str, Any]) -> None:
    """The figures a run's weights are served with, each one the record lacks as a dash, and said so."""
    st.markdown("**As served** (calibrated on the validation split)")
    failed = temperature_at_bound(serving["temperature"])
    if failed:
        st.warning(_bound_warning(serving))
    figures = st.columns(4)
    figures[0].metric("val AUROC", _figure(serving["val_auroc"], 3), help="malignant vs benign, calibrated")
    figures[1].metric("val balanced accuracy", _figure(serving["val_bacc"], 3), help="seven classes")
    figures[2].metric("temperature", _figure(serving["temperature"], 2))
    ece, before = serving["val_ece_malignant"], serving["val_ece_malignant_uncalibrated"]
    change = ece - before if isinstance(ece, int | float) and isinstance(before, int | float) else None
    figures[3].metric(
        "ECE, malignant",
        _figure(ece, 3),
        f"{change:+.3f} by calibration" if change is not None else None,
        delta_color="off" if failed else "inverse",  # a failed fit's change is no gain (nor loss): grey
        help="expected calibration error of p(malignant), after temperature scaling (change from before it)",
    )
    if not serving["complete"]:
        st.caption(
            "The calibration was fitted, but its record lacks some figures (shown as —): written by an older "
            "version, or a figure validation could not compute (e.g. an AUROC with one class only)."
        )


if state.get("train_run") not in set(history["name"]):  # none yet, or a run just deleted: the newest
    state["train_run"] = history["name"].iloc[0]
chosen = st.selectbox("Run", history["name"], key="train_run")
matches = history[history["name"] == chosen]
if matches.empty:
    st.stop()
row = matches.iloc[0]
if row["status"] == run_table.UNREADABLE:
    st.error(f"Cannot show run {plain(row['name'])}: {plain(row['problem'])}")
    delete_popover(st, row["name"], row["path"], row["disk_gb"])
    st.stop()


def chosen_status(row: pd.Series) -> None:
    """The chosen run's status line; a running run's is read afresh each refresh (its epochs and size grow)."""
    fresh = run_table.run_row(row["path"], runs) if row["status"] == "running" else None
    st.write(runs_view.status_line(fresh or row))


st.fragment(chosen_status, run_every=REFRESH_S if row["status"] == "running" else None)(row)
if isinstance(note := row["note"], str):  # list_runs read it with the status
    st.info(note)
if used := state.pop("train_weights_used", None):  # said after the rerun that follows the choice, above the button
    st.success(used)
weights = runs_view.run_weights(row)  # None, never NaN, for a run that saved none
# The weights' button has a row of its own (the run's other buttons share one below): in a quarter of the page
# its label was cut at 800 px.
if weights and row["status"] == "running":
    # The trainer saves the weights before its calibration (an ensemble before it is fitted): not yet served.
    st.caption("Its weights are offered for prediction once it has finished or stopped: they are calibrated last.")
elif weights and row["status"] not in ("finished", "stopped"):
    st.caption(
        "Its weights are not offered for prediction: its last job ended before finishing (perhaps before "
        "calibrating them). Resume it to a stop or the end."
    )
elif weights and runs_view.uses_weights(state, weights):
    st.caption("Predict uses these weights.")
    if st.button(runs_view.USE_DEFAULT_WEIGHTS, help=f"Predict with {weights_menu.default_model_label()}"):
        set_weights(sidebar_state.default_weights())
        state["train_weights_used"] = weights_menu.default_weights_note()
        st.rerun()
elif weights and st.button(
    runs_view.USE_RUN_WEIGHTS,
    help=f"Predict, Evaluation and Home use run {plain(row['name'])}'s weights; the sidebar's Weights list follows",
):
    set_weights(weights)
    state["train_weights_used"] = runs_view.weights_used_note(plain(row["name"]), plain(weights))
    st.rerun()  # the whole page: the sidebar's Weights list follows
buttons = st.columns(3)
resumable = row["status"] in ("stopped", "interrupted") and jobs.resumable(row["path"])
if resumable and buttons[0].button("Resume"):
    with plain_errors("Cannot resume"):
        job = jobs.resume_job(row["path"], runs)
        state["train_resumed"] = f"Resumed {plain(job.name)} (pid {job.pid})."  # said after the rerun, as Start does
        st.rerun()
if row["status"] == "running" and same_file(row["path"], state.get("train_watching")):
    # one control per run: the Runs list names the button "Current job" shows (`live` keeps its label)
    buttons[1].caption(runs_view.current_job_hint(state.get("train_live_control")))
elif row["status"] == "running" and row["stage"] == jobs.ENSEMBLE_STAGE:
    # An ensemble job has no step to stop after (it reads no STOP file): end its process instead.
    if buttons[1].button("Cancel this job", help="End the job now; the ensemble's half-made files are removed"):
        cancelled = jobs.cancel_job(runs, row["path"])
        st.toast("Job cancelled." if cancelled else "That job is no longer running.")
elif row["status"] == "running" and buttons[1].button("Stop this run"):
    jobs.stop_job(row["path"])
    st.toast("Stop requested.")
if row["status"] != "running":
    delete_popover(buttons[2], row["name"], row["path"], row["disk_gb"])
records = read_metrics(row["path"])
serving = serving_summary(records)
if serving and serving["status"] == "fitted":
    show_serving(serving)
elif serving:
    st.warning(
        f"Calibration on validation failed: {serving['error']}. The weights are usable; fit it again with "
        f"`python -m dermai calibrate --weights {weights} --manifest {row['path']}/manifest.csv`."
    )
if has_training_curves(records):
    st.plotly_chart(training_curves_figure(records), width="stretch", key="run_curves")
    describe_chart(st, training_curves_summary(records))
elif row["stage"] == jobs.ENSEMBLE_STAGE:
    st.caption("An ensemble trains nothing: its members' runs have the training curves.")
if row["status"] in ("failed", "interrupted"):
    st.code(run_status.log_tail(row["path"]) or "(no log)", language=None)
