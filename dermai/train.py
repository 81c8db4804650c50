"""The training loop: SimCLR pretraining, then joint-loss fine-tuning, with a metrics stream, checkpoints,
stop and resume.

Stages
  pretrain  NT-Xent on two views of every training image (labels unused, so a label-scarce run still
            learns from all its images).
  finetune  cross-entropy on two views of each labelled training image + λ·NT-Xent between the views,
            class-balanced sampling, model selection and early stopping on validation AUROC.

Each stage has its own AdamW and one cosine schedule over all its steps with optional linear warm-up (the
paper's code restarted its cosine half-way). Fine-tuning can end with stochastic weight averaging: the
weights after each of the last `swa_epochs` epochs are averaged (at a constant `swa_lr` if given), batch-norm
statistics are recomputed for the average, and it is kept if its validation AUROC beats the best epoch's.

Everything random is derived from the seed, the stage, the epoch and the batch index, so a resumed run draws
exactly the batches and augmentations it would have.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from dermai import distributed as dist_utils
from dermai.augment import BatchAugmenter
from dermai.config import (
    AugmentConfig,
    DataConfig,
    RunConfig,
    check_run_config,
    run_config_from_dict,
    to_dict,
    train_input_size,
)
from dermai.data import DataError, Dataset, load_dataset
from dermai.ensemble import EnsembleModel, member_reference, unpack_members
from dermai.evaluate import score
from dermai.inference import (
    autocast_for,
    calibrated_probs,
    class_log_prior,
    default_device,
    forward_pixels,
    malignant_probability,
    softmax_np,
)
from dermai.losses import (
    check_focal_gamma,
    check_mask_weight,
    distill_targets,
    joint_loss,
    lesion_mask_loss,
    nt_xent,
    nt_xent_global,
)
from dermai.mixing import check_mixing, mix_views
from dermai.model import LesionMaskHead, SimCLRResNet18
from dermai.pixel_cache import PreparationStopped, StopCheck, load_masks, load_pixels, stop_if_asked
from dermai.preprocess import eval_batch
from dermai.safe_write import append_json_lines, atomic_leftover, atomic_write_bytes, make_folder, write_json_atomic
from dermai.serving import calibrate_run
from dermai.splits import (
    assign_labelled,
    attach_splits,
    class_balanced_weights,
    manifest_checksum,
    split_checksum,
    write_manifest,
)
from dermai.weights import LoadedWeights, WeightsError, load_weights, save_weights

STAGES: tuple[str, ...] = ("pretrain", "finetune")
STOP_FILE = "STOP"
OWNER_FILE = ".owner"  # flock-ed by the trainer writing the folder, for its whole life (the OS drops it on exit)
JOB_LOG = "job.log"  # the app's log of a job (dermai.jobs), written into the run folder before its trainer starts
# What a launcher leaves in a new run folder before the trainer writes anything: a folder holding only these is new.
LAUNCH_ENTRIES = (OWNER_FILE, STOP_FILE, JOB_LOG)
# The app's own lines in a run's job.log (`job_event_line`; dermai.jobs reads them): the app writes when each job
# it launched started and when the user cancelled one; the trainer, when a STOP ended a new run before it trained.
STOPPED_UNTRAINED = "stopped before training started"
Callback = Callable[[dict[str, Any]], bool | None]


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    status: str  # finished | stopped
    weights: Path | None
    best_score: float | None


class _Heads(nn.Module):
    """One forward giving logits, projections and (with a mask head) lesion-mask logits, so DDP sees every
    parameter used in a step."""

    def __init__(self, model: SimCLRResNet18, mask_head: LesionMaskHead | None = None) -> None:
        super().__init__()
        self.model = model
        self.mask_head = mask_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        fmap = self.model.feature_map(x)
        feats = self.model.pool(fmap)
        mask_logits = self.mask_head(fmap) if self.mask_head is not None else None
        return self.model.classifier(feats), self.model.project(feats), mask_logits


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then one cosine decay to 0 at `total` (no restart)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def stage_lr(step: int, total: int, warmup: int, lr: float, swa_start: int, swa_lr: float | None) -> float:
    """The learning rate at a step of a stage: warm-up and one cosine, then SWA's constant rate from
    `swa_start` when `swa_lr` is set (the cosine then ends at `swa_start`, not at `total`)."""
    if swa_lr is None:
        return lr * cosine_factor(step, total, warmup)
    if step >= swa_start:
        return swa_lr * (cosine_factor(step, total, warmup) if step < warmup else 1.0)  # warm-up still applies
    return lr * cosine_factor(step, swa_start, warmup)


def recompute_batchnorm(
    model: nn.Module, pixels: np.ndarray, order: np.ndarray, augment: AugmentConfig, precision: str = "auto"
) -> None:
    """Reset `model`'s batch-norm statistics and re-estimate them over `pixels[order]`, whole and
    un-augmented as served (a weight average's own statistics are not the average of its epochs')."""
    order = np.sort(order)
    batches = (
        eval_batch(np.asarray(pixels[order[i : i + 128]]), augment.mean, augment.std) for i in range(0, len(order), 128)
    )
    device = next(model.parameters()).device
    with autocast_for(device, precision):
        update_bn(batches, model, device=device)


SPLIT_FIELDS = ("seed", "val_fraction", "test_fraction", "limit", "manifest")


def split_mismatch(
    init_meta: dict[str, Any], data_config: dict[str, Any], split_sha256: str | None = None
) -> str | None:
    """Why weights with metadata `init_meta` may not start a run on the split `data_config` describes (a
    DataConfig as a dict), or None when they were trained on the same one.

    With this run's `split_sha256` (the data read) and the weights' own (`split_checksum`, recorded since it
    was added), the images' sides decide: the same settings on another data folder, or on a metadata CSV with
    images added, put images on other sides. A different label fraction of the same split passes. Otherwise
    (no data read yet, or older weights) the split settings are compared; weights without a recorded data
    config (another tool's) pass: only a recorded difference is proof of another split."""
    theirs = (init_meta.get("config") or {}).get("data") or {}
    differ = [k for k in SPLIT_FIELDS if theirs and theirs.get(k) != data_config.get(k)]
    recorded = init_meta.get("split_sha256")
    if split_sha256 is not None and isinstance(recorded, str):
        if recorded == split_sha256:
            return None
        if not differ:
            return (
                f"trained on another split (the same split settings, but its images are not on the same sides: split"
                f" sha256 {recorded[:12]}…, this run {split_sha256[:12]}…; another data folder, or images added to"
                " or removed from its metadata), so it may have seen this run's validation or test images; train"
                " from weights of this run's data folder and split"
            )
    if not differ:
        return None
    field = differ[0]
    return (
        f"trained on another split ({field} {theirs.get(field)!r}, this run {data_config.get(field)!r}), so it "
        "has seen this run's validation or test images; keep the split (--seed, --manifest) and vary "
        "--train-seed instead"
    )


def restore_advice(data: DataConfig) -> str:
    """How to resume a run whose split no longer rebuilds: a resume keeps the run's saved data settings (the
    command line refuses another --data or --manifest), so the folder they name must be restored as it was."""
    manifest = f" and the manifest {data.manifest}" if data.manifest else ""
    if data.data_dir is None:
        return (
            "The run recorded no --data, so its data folder is looked up again ($DERMAI_DATA, else ./data/ham10000 or "
            "../shared/data/ham10000 from the current folder): set $DERMAI_DATA to the folder it started on, or "
            f"resume from the folder it was started in, with that data folder{manifest} as it was when it started"
        )
    where = "" if Path(data.data_dir).is_absolute() else " (relative to the folder the run started in: resume there)"
    return (
        f"A resume keeps the run's data folder (another --data is refused): restore {data.data_dir}{where}{manifest} "
        "as it was when the run started"
    )


CHECKPOINT_KEYS = ("model", "stage", "epoch", "batch")  # what a resume reads from every checkpoint


def read_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """A run's checkpoint, or a TrainingError naming the file when it is damaged (a copy cut short, a disk that
    filled mid-save, another file in its place): torch's own errors (UnpicklingError, EOFError, a zip reader's
    RuntimeError) named no file, and some ended in a traceback. The one reader of checkpoints: the trainer's
    resume, its check before any data is read, and the app's Resume (`jobs.resume_job`) give the same words."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise TrainingError(damaged_checkpoint(path, lines[0][:160])) from None
    except OSError as exc:  # torch's zip reader fails on some files cut short with "[Errno 22] Invalid argument"
        if exc.filename is not None:  # the file itself could not be opened (missing, no permission): says which
            raise
        raise TrainingError(damaged_checkpoint(path, str(exc))) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise TrainingError(damaged_checkpoint(path, f"no {', '.join(missing)} in it"))
    return ckpt


def damaged_checkpoint(path: Path, why: str) -> str:
    """The message for a checkpoint that cannot be resumed from, and the two ways on."""
    return (
        f"{path}: damaged checkpoint ({why}); delete it to start over (delete the run folder {path.parent.parent}, "
        "or train into another --out folder), or put back an intact copy of it to resume"
    )


def checkpoint_keeps_teacher(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a run's last checkpoint stores its distillation teacher's probabilities (checkpoints do since the
    teacher was made optional for a resume): its resume then needs no teacher file. Read memory-mapped, so
    a large checkpoint costs no more than its index; an unreadable one keeps none."""
    try:
        ckpt = read_checkpoint(Path(run_dir) / "checkpoints" / "last.pt", mmap=True)
    except (OSError, TrainingError):
        return False
    return "teacher_probs" in ckpt


def run_lock_holder(run_dir: str | os.PathLike[str]) -> str | None:
    """Who holds the run folder's owner lock ("pid N"), or None when no process does. An OS lock, not a
    timestamp: a trainer quiet for an hour still holds it, a killed one never does."""
    path = Path(run_dir) / OWNER_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (never trained here) or unreadable: no trainer we can see
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip()
        return f"pid {pid}" if pid.isdigit() else "another process"
    finally:
        os.close(fd)  # also drops the probe's own shared lock
    return None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Own `run_dir` for the block: an exclusive flock on its .owner file, so a second trainer (the app's
    Resume, a CLI run with the same --out) is refused instead of writing the same folder at the same time.
    A run that wrote nothing (e.g. refused before its config) leaves no folder it created, nor a lone .owner."""
    existed = run_dir.exists()
    make_folder(run_dir)
    fd = os.open(run_dir / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(5):  # a status probe holds a shared lock for an instant: not an owner, try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 4:
                os.close(fd)
                holder = run_lock_holder(run_dir) or "another process"
                raise TrainingError(
                    f"{run_dir}: another trainer ({holder}) is running in this folder; stop it or wait for it to end"
                ) from None
            time.sleep(0.05)
    try:
        os.ftruncate(fd, 0)  # the lock, not this text, is the truth: the pid only names the holder
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):  # still holding the lock: nobody else is writing here
            if os.listdir(run_dir) == [OWNER_FILE]:
                (run_dir / OWNER_FILE).unlink()
                if not existed:
                    run_dir.rmdir()
        os.close(fd)


def job_event_line(event: str) -> bytes:
    """One of the app's own job.log lines (`dermai.jobs.JOB_EVENT` reads them), stamped now."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"--- dermai app: job {event} {stamp} (t={now:.3f}) ---\n".encode()


def launcher_entry(name: str) -> bool:
    """Whether a run folder's entry is a launcher's (`LAUNCH_ENTRIES`) or a temporary that a killed writer left
    (`safe_write.atomic_leftover`): a run killed while writing its config.json left one, and its folder then read as
    holding a file of the user's, which no rerun would start over."""
    return name in LAUNCH_ENTRIES or atomic_leftover(name)


def foreign_entry(run_dir: Path, own: Callable[[str], bool] = launcher_entry) -> Path | None:
    """The first entry of `run_dir` (by name) that a new run there would not have made, or None when the folder
    is missing, empty or holds only a launcher's files (`launcher_entry`; `own` says which names another writer,
    an experiment, may find there). A new run writes config.json, manifest.csv, model.safetensors… over whatever
    bears those names, so it starts only in such a folder; the app's Training page (`jobs._new_run_dir`), the
    trainer, an ensemble and an experiment all refuse any other."""
    if not run_dir.is_dir():
        return None
    others = sorted(name for name in os.listdir(run_dir) if not own(name))
    return run_dir / others[0] if others else None


# What a new run has written before its first checkpoint (beside a launcher's files): a run interrupted then
# leaves only these, which neither a new run (files it did not write) nor --resume (no checkpoint) accepts.
UNSTARTED_ENTRIES = frozenset({*LAUNCH_ENTRIES, "config.json", "manifest.csv", "metrics.jsonl", "checkpoints"})


def stopped_unsaved(run_dir: Path) -> bool:
    """Whether `run_dir` holds a trainer's run that stopped (or is still in its first epoch) before its first
    checkpoint: only `UNSTARTED_ENTRIES`, a manifest.csv and a config.json written by a trainer (its settings
    and split checksum), no checkpoints/last.pt. A folder of the user's own is never taken for one."""
    if (run_dir / "checkpoints" / "last.pt").exists() or not (run_dir / "manifest.csv").is_file():
        return False
    if {name for name in os.listdir(run_dir) if not atomic_leftover(name)} - UNSTARTED_ENTRIES:
        return False
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and isinstance(saved.get("config"), dict) and "manifest_sha256" in saved


def clear_unsaved_run(run_dir: Path) -> bool:
    """Remove what a run that stopped before its first checkpoint wrote (`stopped_unsaved`; no trainer holding
    the folder), so a caller that owns the folder (an experiment's grid) can train it again from the start:
    nothing trained is lost, there was no checkpoint. Whether it did."""
    if not stopped_unsaved(run_dir) or run_lock_holder(run_dir) is not None:
        return False
    for name in ("config.json", "manifest.csv", "metrics.jsonl", *filter(atomic_leftover, os.listdir(run_dir))):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return True


def stopped_before_checkpoint(run_dir: Path) -> str:
    """Why a run folder holding no checkpoint yet can be neither resumed nor reused, and what to do: the same
    words for a rerun and for --resume (they said "exists already" and "no config.json or checkpoints/last.pt",
    though config.json was there). A trainer still working there is named instead: its folder is not to go."""
    holder = run_lock_holder(run_dir)
    if holder is not None:
        return f"{run_dir}: another trainer ({holder}) is running in this folder; stop it or wait for it to end"
    return (
        f"{run_dir}: this run stopped before its first checkpoint (one is saved at the end of each epoch), so there "
        "is nothing to resume; delete the folder to train it again, or choose another --out folder"
    )


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(p)) for p in parts])


def _torch_gen(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` (augmentations draw where they run), seeded from the parts."""
    seed = int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialised in memory, then written by Python: torch's own writer (given a path or a file) reports a full
    disk as a RuntimeError ("unexpected pos …") that names neither the file nor the cause."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def split_dataset(data: DataConfig, metadata: pd.DataFrame | None = None) -> Dataset:
    """The images a run reads, each with its side and whether it keeps its label, from the metadata CSV and
    the file names alone (no image is decoded): what `prepare_data` trains on, and what the app checks
    start-from and teacher weights against before it launches a run (`weights_split_problem`; `metadata`: the
    CSV as it read it, passed to `load_dataset`)."""
    return attach_splits(
        load_dataset(data.data_dir, metadata),
        seed=data.seed,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        label_fraction=data.label_fraction,
        manifest=data.manifest,
        limit=data.limit,
    )


def prepare_data(
    cfg: RunConfig,
    workers: int | None = None,
    should_stop: StopCheck | None = None,
    decode_stop: StopCheck | None = None,
) -> tuple[Dataset, np.ndarray]:
    """The split dataset and its cached pixels at the training size, decoded (when not cached yet) by
    `workers` threads: by default the run's `num_workers`, at least one. A trainer's STOP check may end it with
    PreparationStopped: `should_stop` before the decode, `decode_stop` during it (a multi-process trainer's
    ranks agree only before: `Trainer._prepare`)."""
    workers = max(1, cfg.train.num_workers if workers is None else workers)
    dataset = split_dataset(cfg.data)
    stop_if_asked(should_stop, f"{cfg.data.data_dir}: stopped before its images were decoded")
    size = train_input_size(cfg.train)
    pixels = load_pixels(list(dataset.meta["path"]), size, cfg.data.cache_dir, workers, decode_stop)
    return dataset, pixels


def weights_split_problem(meta: dict[str, Any], data: DataConfig, dataset: Dataset) -> str | None:
    """Why weights with metadata `meta` may not start or teach a run on `dataset` (split as `data` says), or
    None: the same manifest passes at once, else `split_mismatch` compares the images' sides. One function for
    the trainer and the app's check before launching, so both refuse the same weights with the same words."""
    recorded, this_run = meta.get("manifest_sha256"), manifest_checksum(dataset)
    if recorded == this_run:
        return None
    if isinstance(recorded, str) and not isinstance(meta.get("split_sha256"), str):
        return _unprovable_split(meta, recorded, this_run, data, dataset)
    return split_mismatch(meta, to_dict(data), split_checksum(dataset))


def _unprovable_split(
    meta: dict[str, Any], recorded: str, this_run: str, data: DataConfig, dataset: Dataset
) -> str | None:
    """For weights that record their manifest's checksum but not their split's sides (`split_sha256`; the
    shipped weights are such): None when this run's split, labelled at their label fraction, is their manifest;
    else why they cannot be shown to share it. Their split settings alone proved nothing: the same seed and
    fractions on another data folder put other images on each side, and the shipped weights, trained on the
    whole HAM10000, passed as the teacher of a run on a few of its images, which they had seen."""
    their_data = (meta.get("config") or {}).get("data") or {}
    theirs = their_data.get("label_fraction")
    if isinstance(theirs, int | float) and 0 < theirs <= 1 and theirs != data.label_fraction:
        meta_frame = dataset.meta.copy()
        meta_frame["labelled"] = assign_labelled(meta_frame, float(theirs), data.seed)
        if manifest_checksum(replace(dataset, meta=meta_frame)) == recorded:
            return None  # the same split at another label fraction
    where = f" (--data {their_data['data_dir']})" if their_data.get("data_dir") else ""
    return (
        f"cannot be shown to share this run's split: it records the manifest it was trained on (manifest_sha256 "
        f"{recorded[:12]}…) but not its images' sides (split_sha256), and this run's manifest differs "
        f"({this_run[:12]}…; another data folder, --limit or manifest, or images added or removed), "
        f"so it may have seen this run's validation or test images; train on the data folder and split it records"
        f"{where}, or from weights of this "
        "run's split"
    )


def stage_color_constancy(cfg: RunConfig, stage: str) -> bool:
    """Whether the model colour-corrects its input during `stage`: each stage follows its own augmentation's
    `color_constancy` (SimCLR views the pretraining one, fine-tuning and everything served the other)."""
    return (cfg.simclr_augment if stage == "pretrain" else cfg.augment).color_constancy


def validation_scores(
    logits: np.ndarray, labels: np.ndarray, malignant: np.ndarray, classes: list[str], log_prior: list[float] | None
) -> dict[str, float]:
    """Validation AUROC (malignant vs benign), accuracy and balanced accuracy of logits.

    p_malignant is computed as served (`calibrated_probs`: softmax(z + log prior)), so the epoch kept is the
    one that ranks best as users see it; accuracies use the plain argmax, the balanced-accuracy decision.
    Non-finite logits mean the weights diverged, which no later epoch undoes: a TrainingError says so,
    instead of scikit-learn's "Input contains NaN" from deep inside the AUROC."""
    bad = int((~np.isfinite(logits).all(axis=1)).sum())
    if bad:
        raise TrainingError(
            f"the model's outputs are not finite for {bad} of {len(logits)} validation images: training diverged "
            "(lower the learning rate, or raise the image size or batch size)"
        )
    probs = softmax_np(logits)
    p_mal = malignant_probability(calibrated_probs(logits, {"log_prior": log_prior}), classes)
    auroc = float(roc_auc_score(malignant, p_mal)) if len(set(malignant)) == 2 else float("nan")
    pred = probs.argmax(1)
    return {
        "val_auroc": auroc,
        "val_acc": float((pred == labels).mean()),
        "val_bacc": float(balanced_accuracy_score(labels, pred)),
    }


def run_finished(run_dir: Path) -> bool:
    """Whether a run's final weights say it finished (not stopped): resuming it would re-run its SWA step,
    refit its serving settings and, after an early stop, train past the stop."""
    try:
        return json.loads((run_dir / "model.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


class Trainer:
    """Runs the stages of one run folder; `run()` is the whole job, resumable from `checkpoints/last.pt`."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | os.PathLike[str],
        callback: Callback | None = None,
        resume: bool = False,
        command: str | None = None,
        progress: bool = False,
        init_weights: str | None = None,
        reset_classifier: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.callback = callback
        self.progress = progress
        self.dist = dist_utils.init_distributed()
        self.device = (
            default_device()
            if not self.dist.enabled
            else (torch.device(f"cuda:{self.dist.local_rank}") if torch.cuda.is_available() else torch.device("cpu"))
        )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest convolutions once
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        self.state: dict[str, Any] = {}
        self.resume_checksum: str | None = None  # the split the run started on (its config.json), when resuming
        self.swa: AveragedModel | None = None  # the running weight average during SWA epochs
        if resume:
            config_path = self.run_dir / "config.json"
            if stopped_unsaved(self.run_dir):
                raise TrainingError(stopped_before_checkpoint(self.run_dir))
            if not config_path.exists() or not self.checkpoint_path.exists():
                raise TrainingError(f"{self.run_dir}: nothing to resume (no config.json or checkpoints/last.pt)")
            if run_finished(self.run_dir):
                raise TrainingError(
                    f"{self.run_dir}: finished already (model.json says so): nothing to resume; to train longer, "
                    "start a new run (--init-weights from this one's model.safetensors)"
                )
            try:
                saved = json.loads(config_path.read_text())
                cfg = run_config_from_dict(saved["config"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TrainingError(f"{config_path}: not a readable run configuration ({exc})") from None
            if run_lock_holder(self.run_dir) is None:  # else a trainer may be writing it: run() refuses that one
                read_checkpoint(self.checkpoint_path, mmap=True)  # damaged: refused before any data is read
            command = saved.get("command", command)
            self.resume_checksum = saved.get("manifest_sha256")
            init_weights = saved.get("init_weights", init_weights)
            reset_classifier = saved.get("reset_classifier", reset_classifier)
        elif self.checkpoint_path.exists():
            raise TrainingError(f"{self.run_dir}: holds a run already; use --resume or another --out folder")
        elif (entry := foreign_entry(self.run_dir)) is not None:
            if stopped_unsaved(self.run_dir):
                raise TrainingError(stopped_before_checkpoint(self.run_dir))
            raise TrainingError(
                f"{entry}: exists already; a new run writes its files into {self.run_dir}, so choose another "
                "--out folder (a new or empty one)"
            )
        tc = cfg.train
        try:  # every setting checked here, before any data is read
            check_run_config(cfg)
            check_mixing(tc.mixup_alpha, tc.cutmix_alpha)
            check_focal_gamma(tc.focal_gamma)
            check_mask_weight(tc.mask_weight, tc.mixup_alpha, tc.cutmix_alpha)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        self.stages = STAGES if cfg.stage == "both" else (cfg.stage,)
        # Colour constancy is part of the model, so every later use of it sees it too; each stage trains with
        # its own augmentation's setting (`_run_stage`), and the weights record the last stage's.
        constancy = stage_color_constancy(cfg, self.stages[-1])
        self.cfg = replace(cfg, model=replace(cfg.model, color_constancy=constancy))
        self.command = command or " ".join(sys.argv)
        self.init_weights = init_weights
        self.reset_classifier = reset_classifier
        self.resume = resume

    # ------------------------------------------------------------------------------------------ setup
    def _log(self, record: dict[str, Any]) -> bool:
        """Append a metrics line (rank 0) and pass it to the callback; False means stop requested."""
        record = {"time": time.time(), **record}
        keep_going = True
        if self.dist.is_main:
            append_json_lines(self.run_dir / "metrics.jsonl", [record])
            if self.callback is not None and self.callback(record) is False:
                keep_going = False
        return keep_going

    def _stop_requested(self) -> bool:
        return (self.run_dir / STOP_FILE).exists()

    def _build_model(self, num_classes: int) -> SimCLRResNet18:
        torch.manual_seed(self.cfg.train.seed)
        model = SimCLRResNet18(num_classes, self.cfg.model, self.cfg.augment.mean, self.cfg.augment.std)
        # A resume's checkpoint holds every trained tensor, so the start-from weights (checked when the run
        # started) are not read again: the run resumes even if they were moved or deleted since.
        if self.init_weights and not self.resume:
            loaded = self._init_network(self.init_weights)
            self._check_same_split(loaded.meta)
            state = loaded.model.state_dict()
            # A fine-tuned model's classifier is trained and worth keeping when it predicts the same classes;
            # a pretraining run's never saw a label, so the new run draws its own. `reset_classifier` draws a
            # fresh one anyway: a second fine-tune from the same trunk then lands elsewhere (an ensemble member).
            keep_classifier = (
                not self.reset_classifier
                and "finetune" in loaded.meta.get("stages", [])
                and list(loaded.meta["classes"]) == list(self.dataset.classes)
            )
            if not keep_classifier:
                state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            model.load_state_dict(state, strict=False)
        return model.to(self.device).to(memory_format=torch.channels_last)

    @staticmethod
    def _init_network(spec: str) -> LoadedWeights:
        """The one network `--init-weights` names: a weights file of one model, or `FILE#K`, member K of an
        ensemble file (a shipped model is one; its members keep no SimCLR projection head, so the run's own
        freshly drawn one is used)."""
        path, k = member_reference(spec)
        loaded = load_weights(path)
        if isinstance(loaded.model, SimCLRResNet18) and k is None:
            return loaded
        members = unpack_members(loaded) if isinstance(loaded.model, EnsembleModel) else []
        if k is None:
            raise TrainingError(f"{spec}: an ensemble cannot initialise a run; pass one member ({spec}#1, {spec}#2, …)")
        if not 1 <= k <= len(members):
            raise TrainingError(
                f"{spec}: {path} holds no member {k} (it has {len(members) or 'one model, no members'})"
            )
        return members[k - 1]

    def _check_same_split(self, init_meta: dict[str, Any], source: str | None = None) -> None:
        """Refuse initial (or teacher) weights trained on another split of the same data: they have seen this
        run's validation or test images, and every figure measured on them would be inflated. (A different
        label fraction of the same split is fine: the label-efficiency experiment starts each fraction that way.)"""
        mismatch = weights_split_problem(init_meta, self.cfg.data, self.dataset)
        if mismatch:
            raise TrainingError(f"{source or self.init_weights}: {mismatch}")

    def _distill_targets(self, ckpt: dict[str, Any] | None) -> np.ndarray:
        """The teacher's probabilities for this run: when resuming, those the checkpoint stored (saved with it,
        so a resume needs neither the teacher's file nor a second scoring, which another device could round
        differently); else scored now by the teacher (`_teacher_probs`)."""
        stored = (ckpt or {}).get("teacher_probs")
        expected = (len(self.dataset.meta), len(self.dataset.classes))
        if stored is not None and tuple(stored.shape) == expected:
            return stored.cpu().numpy()
        assert self.cfg.train.distill_from is not None  # check_run_config
        return self._teacher_probs(self.cfg.train.distill_from)

    def _teacher_probs(self, path: str) -> np.ndarray:
        """(N, K) float32 in the dataset's row order: the teacher's softmax of its raw logits (balanced classes,
        as the student's) for each training image, un-augmented, at the teacher's input size; NaN elsewhere."""
        try:
            teacher = load_weights(path)
        except WeightsError as exc:
            why = (
                f"; resuming {self.run_dir}, whose checkpoint was saved without the teacher's probabilities,"
                " needs the teacher to score its training images again: restore it at that path, or start a new run"
                if self.resume
                else ""
            )
            raise TrainingError(f"distill_from: {exc}{why}") from None
        if list(teacher.meta["classes"]) != list(self.dataset.classes):
            raise TrainingError(
                f"{path}: the teacher predicts {list(teacher.meta['classes'])}, this run {list(self.dataset.classes)}"
            )
        self._check_same_split(teacher.meta, path)
        rows = self.train_idx
        logits, _ = score(
            teacher,
            list(self.dataset.meta["path"].iloc[rows]),
            precision=self.cfg.train.precision,
            cache_dir=self.cfg.data.cache_dir,
            workers=max(1, self.cfg.train.num_workers),
            device=self.device,
        )
        probs = np.full((len(self.dataset.meta), len(self.dataset.classes)), np.nan, dtype=np.float32)
        probs[rows] = softmax_np(logits)
        return probs

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        """The whole job, holding the folder's owner lock throughout (rank 0; the other ranks follow it). A
        STOP file is left alone at startup: one written while the process was starting still stops it (the
        app clears a stale one before launching)."""
        with run_lock(self.run_dir) if self.dist.is_main else contextlib.nullcontext():
            return self._run()

    def _check_resumed_split(self, dataset: Dataset) -> None:
        """Refuse to resume on another split than the run started on. The split is rebuilt from the data
        folder, which may have changed since (another $DERMAI_DATA, an edited metadata CSV): continuing would
        fine-tune or validate on images the saved weights were trained on, and the run would still say
        "finished"."""
        saved = self.resume_checksum
        if not self.resume or saved is None:
            return
        rebuilt = manifest_checksum(dataset)
        if rebuilt != saved:
            raise TrainingError(
                f"{self.run_dir}: the split rebuilt from {dataset.root} (sha256 {rebuilt[:12]}…) is not the one this "
                f"run started on ({saved[:12]}…, its manifest.csv): the data folder or its metadata changed. "
                f"{restore_advice(self.cfg.data)}, or start a new run"
            )

    def _run(self) -> TrainResult:
        cfg = self.cfg
        dist_utils.barrier(self.dist)
        try:
            model, ckpt = self._prepare()
        except PreparationStopped:
            return self._stopped_before_training()
        dataset = self.dataset
        if self.dist.is_main and not self.resume:
            write_manifest(dataset, self.run_dir / "manifest.csv")
            write_json_atomic(
                self.run_dir / "config.json",
                {
                    "config": to_dict(cfg),
                    "command": self.command,
                    "init_weights": self.init_weights,
                    "reset_classifier": self.reset_classifier,
                    "manifest_sha256": manifest_checksum(dataset),
                    "classes": list(dataset.classes),
                    "mode": dataset.mode,
                    "group_key": dataset.group_key,
                },
            )
        start_stage, start_epoch, start_batch = 0, 0, 0
        self.best_score: float | None = None
        self.bad_epochs = 0
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            if self.mask_head is not None and "mask_head" in ckpt:
                self.mask_head.load_state_dict(ckpt["mask_head"])
            start_stage = self.stages.index(ckpt["stage"])
            start_epoch, start_batch = ckpt["epoch"], ckpt["batch"]
            self.best_score = ckpt.get("best_score")
            self.bad_epochs = ckpt.get("bad_epochs", 0)
            self.state = ckpt
        self.model = model
        self.total_steps = sum(self._stage_total(s) for s in self.stages)
        self.steps_done = self.state.get("global_step", 0) if self.resume else 0
        self.t0, self.steps_timed = time.time(), 0
        status = "finished"
        for i in range(start_stage, len(self.stages)):
            stage = self.stages[i]
            resume_state = self.state if (self.resume and i == start_stage) else None
            finished = self._run_stage(
                stage, start_epoch if resume_state else 0, start_batch if resume_state else 0, resume_state
            )
            if not finished:
                status = "stopped"
                break
        weights = self._write_final_weights(status) if self.dist.is_main else None
        if weights is not None:
            self._log(calibrate_run(weights, status, self.stages))
        self._log(
            {
                "kind": "status",
                "status": status,
                "weights": str(weights) if weights else None,
                "best_score": self.best_score,
            }
        )
        dist_utils.barrier(self.dist)
        return TrainResult(self.run_dir, status, weights, self.best_score)

    def _preparation_stop(self) -> StopCheck:
        """The STOP check between preparation steps. Alone: the STOP file. With several processes: rank 0's
        reading of it, broadcast, so every rank raises PreparationStopped at the same step (ranks that disagreed
        would wait on each other for ever); a collective, so every rank must ask it at the same steps."""
        if not self.dist.enabled:
            return self._stop_requested
        return lambda: dist_utils.broadcast_flag(self.dist.is_main and self._stop_requested(), self.dist)

    def _prepare(self) -> tuple[SimCLRResNet18, dict[str, Any] | None]:
        """Everything read before the first step (the split, its pixel cache, masks, the model, the checkpoint
        resumed, a teacher's scores): minutes on a CPU at a new image size, so a STOP file written meanwhile ends
        it between these steps (PreparationStopped), and, in one process, within a cache's decode. Several
        processes agree at the steps only (`_preparation_stop`): each rank decodes on its own and may find the
        cache another rank just wrote, so their decodes do not pass the same images in step."""
        cfg = self.cfg
        should_stop = self._preparation_stop()
        decode_stop = None if self.dist.enabled else should_stop
        untrained = f"{self.run_dir}: stopped before training started"
        dataset, pixels = prepare_data(cfg, should_stop=should_stop, decode_stop=decode_stop)
        self._check_resumed_split(dataset)
        meta = dataset.meta
        self.dataset, self.pixels = dataset, pixels
        # On a GPU the whole uint8 cache lives on the device and batches are augmented there; on a CPU
        # batches are read from the memmap.
        self.device_pixels = torch.from_numpy(np.array(pixels)).to(self.device) if self.device.type == "cuda" else None
        self.train_idx = np.flatnonzero(meta["split"].to_numpy() == "train")
        self.labelled_idx = np.flatnonzero((meta["split"].to_numpy() == "train") & meta["labelled"].to_numpy())
        self.val_idx = np.flatnonzero(meta["split"].to_numpy() == "val")
        self.labels = meta["label"].to_numpy()
        # Fine-tuning balances the classes either way (balanced batches, or the class-weighted loss without
        # them), so its logits assume equal class frequencies; validation adds the labelled training split's
        # log prior back, as serving does, so the epoch kept is the best one as served.
        self.val_log_prior = (
            class_log_prior(self.labels[self.labelled_idx], len(dataset.classes)) if len(self.labelled_idx) else None
        )
        # The lesion-mask loss (fine-tuning only) reads every image's mask, cached beside the pixels.
        self.masks: np.ndarray | None = None
        self.mask_head: LesionMaskHead | None = None
        if cfg.train.mask_weight > 0 and "finetune" in self.stages:
            stop_if_asked(should_stop, untrained)  # after the pixels' decode, before the masks'
            try:
                self.masks = load_masks(
                    dataset, train_input_size(cfg.train), cfg.data.cache_dir, max(1, cfg.train.num_workers), decode_stop
                )
            except DataError as exc:
                raise TrainingError(f"mask_weight {cfg.train.mask_weight}: {exc}") from None
            torch.manual_seed(cfg.train.seed)
            self.mask_head = LesionMaskHead(cfg.model.feature_dim).to(self.device)
        self.device_masks = (
            torch.from_numpy(np.array(self.masks)).to(self.device)
            if self.masks is not None and self.device.type == "cuda"
            else None
        )
        stop_if_asked(should_stop, untrained)
        # Built first: unusable --init-weights then fail before config.json and manifest.csv are written.
        model = self._build_model(len(dataset.classes))
        ckpt = read_checkpoint(self.checkpoint_path, self.device) if self.resume else None
        # Distillation (fine-tuning only): the teacher scores every training image once, before any step; the
        # checkpoints keep its probabilities for a resume.
        self.teacher_probs: np.ndarray | None = None
        if cfg.train.distill_weight > 0 and "finetune" in self.stages:
            stop_if_asked(should_stop, untrained)  # scoring the training images takes a while too
            self.teacher_probs = self._distill_targets(ckpt)
        stop_if_asked(should_stop, untrained)
        return model, ckpt

    def _stopped_before_training(self) -> TrainResult:
        """End a run whose STOP file came while it prepared its data, as a stop does (status "stopped"), with
        nothing trained. A resumed run logs its status record ("before_training") and resumes again as before. A
        new one writes nothing (no config or metrics: its folder stays one a launcher left, so the same command
        or run name starts it again), only the job log's event when the app launched it (`job_event_line`), so
        the app reads it "stopped", not "failed". Rank 0 alone writes and says so."""
        weights = self.run_dir / "model.safetensors"
        kept = weights if weights.exists() else None
        if not self.dist.is_main:
            return TrainResult(self.run_dir, "stopped", kept, None)
        (self.run_dir / STOP_FILE).unlink(missing_ok=True)  # honoured: a later start must not stop on it again
        if self.resume:
            self._log(
                {
                    "kind": "status",
                    "status": "stopped",
                    "before_training": True,
                    "weights": str(kept) if kept else None,
                    "best_score": None,
                }
            )
        elif (self.run_dir / JOB_LOG).exists():
            with contextlib.suppress(OSError), open(self.run_dir / JOB_LOG, "ab") as log:
                log.write(job_event_line(STOPPED_UNTRAINED))
        print(f"{self.run_dir}: stopped before training started (STOP file); nothing was trained", file=sys.stderr)
        return TrainResult(self.run_dir, "stopped", kept, None)

    def _stage_total(self, stage: str) -> int:
        n = len(self.train_idx) if stage == "pretrain" else len(self.labelled_idx)
        epochs = self.cfg.train.pretrain_epochs if stage == "pretrain" else self.cfg.train.finetune_epochs
        return self._batch_plan(n)[1] * epochs

    def _batch_plan(self, n_images: int) -> tuple[int, int]:
        """(per-rank batch size, steps per epoch): every rank takes the same number of equal batches, so
        DDP's collective calls always pair up."""
        world = self.dist.world_size
        batch = min(self.cfg.train.batch_size, n_images // world)
        if batch < 2:
            raise TrainingError(f"{n_images} images cannot make batches of 2 on {world} process(es)")
        return batch, max(1, n_images // (batch * world))

    # ------------------------------------------------------------------------------------------ stage
    def _run_stage(self, stage: str, start_epoch: int, start_batch: int, resume_state: dict | None) -> bool:
        cfg, tc = self.cfg, self.cfg.train
        epochs = tc.pretrain_epochs if stage == "pretrain" else tc.finetune_epochs
        pool = self.train_idx if stage == "pretrain" else self.labelled_idx
        if len(pool) < 2:
            raise TrainingError(f"{stage}: needs at least 2 training images, has {len(pool)}")
        self.model.color_constancy = stage_color_constancy(cfg, stage)  # before the SWA average copies it
        batch, steps = self._batch_plan(len(pool))
        my_batches = [self.dist.rank + self.dist.world_size * i for i in range(steps)]
        total = len(my_batches) * epochs
        warmup = int(round(tc.warmup_epochs * len(my_batches)))
        swa_first_epoch = epochs - tc.swa_epochs if stage == "finetune" else epochs  # == epochs: no averaging
        swa_start = len(my_batches) * swa_first_epoch
        swa_lr = tc.swa_lr if swa_first_epoch < epochs else None
        self.swa = AveragedModel(self.model) if swa_first_epoch < epochs else None
        if self.swa is not None and resume_state is not None and "swa_model" in resume_state:
            self.swa.load_state_dict(resume_state["swa_model"])
        stage_id = STAGES.index(stage)
        aug_cfg = cfg.simclr_augment if stage == "pretrain" else cfg.augment
        augmenter = BatchAugmenter(aug_cfg, train_input_size(tc))
        mask_head = self.mask_head if stage == "finetune" else None
        heads = _Heads(self.model, mask_head)
        net: nn.Module = heads
        if self.dist.enabled:
            net = DistributedDataParallel(heads)
        params = [*self.model.parameters(), *(mask_head.parameters() if mask_head is not None else [])]
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        if resume_state is not None and "optimizer" in resume_state:
            optimizer.load_state_dict(resume_state["optimizer"])
        class_weights = None
        if stage == "finetune" and not tc.balanced_sampling:
            counts = np.bincount(self.labels[pool], minlength=len(self.dataset.classes)).astype(float)
            class_weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
        bar = tqdm(
            total=total,
            initial=start_epoch * len(my_batches) + start_batch,
            desc=stage,
            disable=not (self.progress and self.dist.is_main),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for epoch in range(start_epoch, epochs):
            bar.set_description(f"{stage}, epoch {epoch + 1} of {epochs}")  # as the Training page counts them
            order = self._epoch_order(stage, pool, epoch)
            correct = seen = 0
            loss_sum = 0.0
            first = start_batch if epoch == start_epoch else 0
            for position in range(first, len(my_batches)):
                b = my_batches[position]
                step_in_stage = epoch * len(my_batches) + position
                for group in optimizer.param_groups:
                    group["lr"] = stage_lr(step_in_stage, total, warmup, tc.lr, swa_start, swa_lr)
                idx = np.sort(order[b * batch : (b + 1) * batch])
                t_step = time.time()
                record = self._step(
                    stage,
                    net,
                    optimizer,
                    augmenter,
                    idx,
                    _torch_gen(tc.seed, stage_id, epoch, b, device=self.device),
                    class_weights,
                )
                elapsed = time.time() - t_step
                self.steps_done += 1
                self.steps_timed += 1
                loss_sum += record["loss"]
                correct += record.pop("correct", 0)
                seen += record.pop("seen", 0)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                stop = self._stop_requested()
                # The first step this process takes is logged too: the app reads a resumed run as training again
                # only once a step record is stamped after its trainer took the folder (`run_status.trained_this_job`).
                first_step = self.steps_timed == 1
                if position % max(1, tc.log_every) == 0 or position == len(my_batches) - 1 or stop or first_step:
                    rate = (time.time() - self.t0) / max(1, self.steps_timed)
                    keep = self._log(
                        {
                            "kind": "step",
                            "stage": stage,
                            "epoch": epoch,
                            "step": step_in_stage,
                            "global_step": self.steps_done,
                            "total_steps": self.total_steps,
                            "lr": optimizer.param_groups[0]["lr"],
                            "images_per_s": len(idx) / elapsed,
                            "eta_s": rate * (self.total_steps - self.steps_done),
                            **record,
                        }
                    )
                    stop = stop or not keep
                if dist_utils.broadcast_flag(stop, self.dist):
                    self._save_checkpoint(stage, epoch, position + 1, optimizer)
                    if self.dist.is_main:  # honoured: a later resume must not stop on it again
                        (self.run_dir / STOP_FILE).unlink(missing_ok=True)
                    bar.close()
                    return False
            epoch_record: dict[str, Any] = {
                "kind": "epoch",
                "stage": stage,
                "epoch": epoch,
                "global_step": self.steps_done,
                "total_steps": self.total_steps,
                "loss": loss_sum / max(1, len(my_batches) - first),
            }
            if self.swa is not None and epoch >= swa_first_epoch:
                self.swa.update_parameters(self.model)
                epoch_record["swa_averaged"] = int(self.swa.n_averaged)
            if stage == "finetune":
                epoch_record["train_acc"] = correct / max(1, seen)
                epoch_record.update(self._validate())
                improved = self._track_best(epoch_record["val_auroc"])
                epoch_record["best_val_auroc"] = self.best_score
                if improved and self.dist.is_main:
                    save_weights(
                        self.model, self.run_dir / "checkpoints" / "best.safetensors", self._weights_meta(epoch_record)
                    )
            self._save_checkpoint(stage, epoch + 1, 0, optimizer)
            self._log(epoch_record)
            patience = tc.early_stopping_patience
            if stage == "finetune" and patience and self.bad_epochs >= patience:
                self._log({"kind": "early_stop", "stage": stage, "epoch": epoch, "best_score": self.best_score})
                break
        bar.close()
        if self.swa is not None and int(self.swa.n_averaged) > 0:
            self._finish_swa(stage)
        return True

    def _finish_swa(self, stage: str) -> None:
        """Recompute the average's batch-norm statistics, score it on validation, and make it the run's weights
        if it beats the best epoch.

        The statistics come from the images of one more fine-tuning epoch, drawn as training drew them
        (class-balanced), but whole and un-augmented, as served. On HAM10000 drawing them in their natural
        proportions (two thirds naevi) cost 0.035 validation AUROC (scripts/swa_batchnorm.py): the layers after
        each batch norm learned on balanced batches."""
        averaged = self.swa.module
        order = self._epoch_order(stage, self.labelled_idx, self.cfg.train.finetune_epochs)
        recompute_batchnorm(averaged, self.pixels, order, self.cfg.augment, self.cfg.train.precision)
        record: dict[str, Any] = {"kind": "swa", "stage": stage, "epochs_averaged": int(self.swa.n_averaged)}
        record.update(self._validate(averaged))
        improved = self._track_best(record["val_auroc"])
        record["best_val_auroc"] = self.best_score
        record["kept"] = improved
        if improved:
            self.model.load_state_dict(averaged.state_dict())
            if self.dist.is_main:
                save_weights(self.model, self.run_dir / "checkpoints" / "best.safetensors", self._weights_meta(record))
        self._log(record)

    def _epoch_order(self, stage: str, pool: np.ndarray, epoch: int) -> np.ndarray:
        """This epoch's image order: a permutation (pretrain) or a class-balanced draw with replacement."""
        rng = _rng(self.cfg.train.seed, STAGES.index(stage), epoch)
        if stage == "finetune" and self.cfg.train.balanced_sampling:
            weights = class_balanced_weights(self.labels[pool])
            return rng.choice(pool, size=len(pool), replace=True, p=weights / weights.sum())
        return pool[rng.permutation(len(pool))]

    def _step(
        self,
        stage: str,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        augmenter: BatchAugmenter,
        idx: np.ndarray,
        gen: torch.Generator,
        class_weights: torch.Tensor | None,
    ) -> dict[str, Any]:
        tc = self.cfg.train
        pixels = self._rows(self.pixels, self.device_pixels, idx)
        masks = None
        if stage == "finetune" and self.masks is not None:
            masks = self._rows(self.masks, self.device_masks, idx)
        view_a, mask_a = augmenter.with_masks(pixels, masks, gen)
        view_b, mask_b = augmenter.with_masks(pixels, masks, gen)
        views = torch.cat([view_a, view_b]).to(self.device)
        n = len(idx)
        labels = torch.from_numpy(self.labels[idx]).to(self.device)
        targets: torch.Tensor = labels
        if stage == "finetune" and (tc.mixup_alpha > 0 or tc.cutmix_alpha > 0):
            views, targets = mix_views(views, labels, len(self.dataset.classes), tc.mixup_alpha, tc.cutmix_alpha, gen)
            labels = targets.argmax(1)  # the larger share of each mixed image, for the training accuracy
        if stage == "finetune" and self.teacher_probs is not None:
            teacher = torch.from_numpy(self.teacher_probs[idx]).to(self.device)
            targets = distill_targets(labels, teacher, tc.distill_weight)
        views = views.contiguous(memory_format=torch.channels_last)
        net.train()
        with autocast_for(self.device, tc.precision, training=True):  # fp32 rather than unscaled fp16
            logits, z, mask_logits = net(views)
        z_a, z_b = z[:n], z[n:]
        ids = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.device)  # copies of an image: no negatives
        if self.dist.enabled:
            all_a = dist_utils.gather_with_grad(z_a.float().contiguous(), self.dist)
            all_b = dist_utils.gather_with_grad(z_b.float().contiguous(), self.dist)
            all_ids = dist_utils.gather_with_grad(ids, self.dist)
            ntx = nt_xent_global(z_a, z_b, all_a, all_b, self.dist.rank * n, tc.temperature, ids, all_ids)
        else:
            ntx = nt_xent(z_a, z_b, tc.temperature, ids)
        record: dict[str, Any] = {"ntxent": float(ntx.detach())}
        if stage == "pretrain":
            loss = ntx + 0.0 * logits.float().sum()  # the classifier joins the graph, so DDP sees all grads
        else:
            loss, ce = joint_loss(
                logits[:n],
                logits[n:],
                targets,
                ntx,
                tc.lambda_ntxent,
                None if class_weights is None else class_weights.to(self.device),
                tc.label_smoothing,
                tc.focal_gamma,
            )
            if mask_logits is not None and mask_a is not None and mask_b is not None:
                seg = lesion_mask_loss(mask_logits, torch.cat([mask_a, mask_b]).to(self.device))
                loss = loss + tc.mask_weight * seg
                record["mask_loss"] = float(seg.detach())
            pred = logits.float().argmax(1)
            record.update(
                ce=float(ce.detach()),
                correct=int((pred == torch.cat([labels, labels])).sum()),
                seen=2 * n,
                train_acc=float((pred == torch.cat([labels, labels])).float().mean()),
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record["loss"] = float(loss.detach())
        return record

    def _rows(self, cached: np.ndarray, on_device: torch.Tensor | None, idx: np.ndarray) -> torch.Tensor:
        """A batch's rows of a uint8 cache: from its copy on the GPU when there is one, else from the memmap."""
        if on_device is not None:
            return on_device[torch.from_numpy(idx).to(self.device)]
        return torch.from_numpy(np.ascontiguousarray(cached[idx]))

    def _validate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Validation AUROC (malignant vs benign), accuracy and balanced accuracy, on un-augmented images
        (of the run's model, or of `model`)."""
        if len(self.val_idx) == 0:
            return {"val_auroc": float("nan")}
        model = model if model is not None else self.model
        aug = self.cfg.augment  # the normalisation the weights' JSON records, as evaluation will use it
        logits, _ = forward_pixels(
            model, self.pixels[self.val_idx], mean=aug.mean, std=aug.std, precision=self.cfg.train.precision
        )
        malignant = self.dataset.meta["malignant"].to_numpy()[self.val_idx]
        return validation_scores(
            logits, self.labels[self.val_idx], malignant, list(self.dataset.classes), self.val_log_prior
        )

    def _track_best(self, score: float) -> bool:
        if math.isnan(score):
            score = -1.0
        if self.best_score is None or score > self.best_score:
            self.best_score, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    def _save_checkpoint(self, stage: str, epoch: int, batch: int, optimizer: torch.optim.Optimizer) -> None:
        """Where to continue from: the next batch of `epoch` in `stage` (rank 0 writes)."""
        if not self.dist.is_main:
            return
        _atomic_torch_save(
            {
                "model": self.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "stage": stage,
                "epoch": epoch,
                "batch": batch,
                "global_step": self.steps_done,
                "best_score": self.best_score,
                "bad_epochs": self.bad_epochs,
                **({"swa_model": self.swa.state_dict()} if self.swa is not None else {}),
                **({"mask_head": self.mask_head.state_dict()} if self.mask_head is not None else {}),
                **({"teacher_probs": torch.from_numpy(self.teacher_probs)} if self.teacher_probs is not None else {}),
            },
            self.checkpoint_path,
        )

    def _weights_meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "classes": list(self.dataset.classes),
            "mode": self.dataset.mode,
            "image_size": cfg.train.image_size,
            **({"image_width": cfg.train.image_width} if train_input_size(cfg.train) != cfg.train.image_size else {}),
            "mean": list(cfg.augment.mean),
            "std": list(cfg.augment.std),
            # The colour constancy these weights were trained with (the stage's, for a run stopped early).
            "model": {**to_dict(cfg.model), "color_constancy": bool(self.model.color_constancy)},
            "temperature": 1.0,
            "stages": list(self.stages),
            "manifest_sha256": manifest_checksum(self.dataset),
            "split_sha256": split_checksum(self.dataset),  # the sides alone: what `split_mismatch` compares
            "command": self.command,
            "config": to_dict(cfg),
            "val_metrics": metrics or {},
        }

    def _write_final_weights(self, status: str) -> Path:
        """`model.safetensors` + `model.json`: the best fine-tuned weights, or the current ones."""
        best = self.run_dir / "checkpoints" / "best.safetensors"
        target = self.run_dir / "model.safetensors"
        if best.exists():
            loaded = load_weights(best)
            meta = {k: v for k, v in loaded.meta.items() if k != "format"}
            meta["status"] = status
            return save_weights(loaded.model, target, meta)
        return save_weights(self.model, target, {**self._weights_meta(), "status": status})


def train(cfg: RunConfig, run_dir: str | os.PathLike[str], **kwargs: Any) -> TrainResult:
    """Run (or resume) a training job; see `Trainer`."""
    trainer = Trainer(cfg, run_dir, **kwargs)
    try:
        return trainer.run()
    finally:
        dist_utils.cleanup(trainer.dist)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records. Only JSON objects are kept: a torn last line (a run still writing),
    a damaged byte or a stray non-object line is skipped, so every reader can call .get on each record."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:  # none yet, or the folder deleted while the app polls it
        return []
    return parse_metrics(text)


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The JSON-object records of a metrics.jsonl text, as `read_metrics` keeps them (the Runs table parses the
    text through `file_cache`, once per version of the file)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
