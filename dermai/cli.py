"""`python -m dermai …` subcommands. Thin: parse arguments, call the core, print; errors become one
`error: …` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dermai.config import PRECISIONS, RunConfig, override_augment

if TYPE_CHECKING:  # imported lazily at run time: torch and friends are slow to load for `--help`
    from dermai.intake import IntakeResult
    from dermai.predict import Prediction, Predictor
    from dermai.worklist import WorklistEntry


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help, written one way, "(default: X)", unless the help already says
    what happens without the option: so no flag's default has to be looked up in the code."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if not action.option_strings or "default" in text or default is None or default is False:
            return action.help
        if default == argparse.SUPPRESS or default == []:
            return action.help
        shown = (" ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)).replace("%", "%%")
        if text.endswith(")"):  # "… (0 = off)" → "… (0 = off; default: 0.0)"
            return f"{text[:-1]}; default: {shown})"
        return f"{text} (default: {shown})".lstrip()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help (and its subcommands', which argparse makes of the same class) shows
    defaults by `HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


DATA_HELP = "data folder (default: $DERMAI_DATA, else ./data/ham10000, else ../shared/data/ham10000)"


def _add_data_args(p: argparse.ArgumentParser, seed_help: str = "seed of the split") -> None:
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--manifest", help="use this split manifest instead of computing one")
    p.add_argument(
        "--val-fraction", type=float, default=0.15, help="share of the images held out for validation (whole lesions)"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.15, help="share of the images held out for testing (whole lesions)"
    )
    p.add_argument("--limit", type=_positive_int, help="use about this many images (stratified, whole lesions)")
    p.add_argument("--cache-dir", help="pixel cache folder (default: $DERMAI_CACHE, else ~/.cache/dermai)")


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number ≥ `minimum`; anything else is a usage error saying what was given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_count = _whole_number(0)  # resample counts: 0 = no interval; a negative one is a typo
_positive_int = _whole_number(1)  # sizes and --limit: 0 would fail later, or mean "all" unsaid
LABEL_FRACTION_HELP = "share of the training images whose labels fine-tuning uses (label-efficiency runs)"
PRECISION_HELP = "auto: bf16 where the GPU or CPU has it natively, else fp32"
FIT_TTA_HELP = "fit calibration on test-time-augmented logits (the mean over the 8 flips/rotations)"


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p, seed_help="seed of the split, and of training unless --train-seed")
    d = RunConfig().train
    p.add_argument("--out", required=True, help="run folder (config, metrics.jsonl, checkpoints, weights)")
    p.add_argument("--image-size", type=_positive_int, default=d.image_size, help="input height (and width) in px")
    p.add_argument(
        "--image-width",
        type=_positive_int,
        default=d.image_width,
        help="input width in px (default: --image-size, a square); HAM10000's 4:3 images keep their shape at "
        "e.g. --image-size 120 --image-width 160",
    )
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="images per training step")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate (cosine schedule per stage)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs, help="SimCLR pretraining epochs")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help="fine-tuning epochs")
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=d.warmup_epochs,
        help="epochs of linear learning-rate warm-up at the start of each stage (0 = none)",
    )
    p.add_argument("--label-fraction", type=float, default=1.0, help=LABEL_FRACTION_HELP)
    p.add_argument("--lambda", dest="lambda_ntxent", type=float, default=d.lambda_ntxent, help="NT-Xent weight λ")
    p.add_argument("--temperature", type=float, default=d.temperature, help="NT-Xent temperature τ")
    p.add_argument(
        "--label-smoothing", type=float, default=d.label_smoothing, help="cross-entropy label smoothing (0 = off)"
    )
    p.add_argument(
        "--focal-gamma", type=float, default=d.focal_gamma, help="focal loss γ when fine-tuning (0 = plain CE)"
    )
    p.add_argument(
        "--mask-weight",
        type=float,
        default=d.mask_weight,
        help="weight of the auxiliary lesion-mask loss when fine-tuning; needs <data>/masks (0 = off)",
    )
    p.add_argument(
        "--distill-from",
        default=d.distill_from,
        help="teacher weights (a model or ensemble of the same split) whose probabilities fine-tuning learns too",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        default=d.distill_weight,
        help="share w of the teacher in each fine-tuning target: (1 − w)·label + w·teacher (0 = off)",
    )
    p.add_argument(
        "--mixup-alpha", type=float, default=d.mixup_alpha, help="MixUp Beta(α, α) when fine-tuning (0 = off)"
    )
    p.add_argument(
        "--cutmix-alpha", type=float, default=d.cutmix_alpha, help="CutMix Beta(α, α) when fine-tuning (0 = off)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=d.early_stopping_patience,
        help="stop fine-tuning after this many epochs without a better validation AUROC (0 = off)",
    )
    p.add_argument(
        "--swa-epochs",
        type=int,
        default=d.swa_epochs,
        help="average the weights of the last N fine-tuning epochs (stochastic weight averaging; 0 = off)",
    )
    p.add_argument(
        "--swa-lr",
        type=float,
        default=d.swa_lr,
        help="constant learning rate of the SWA epochs (default: the cosine schedule's)",
    )
    p.add_argument(
        "--no-balanced-sampling",
        action="store_true",
        help="weight the loss by class instead of drawing class-balanced batches",
    )
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision, help=PRECISION_HELP)
    p.add_argument(
        "--num-workers",
        type=int,
        default=d.num_workers,
        help="threads decoding images into the pixel cache on a first run at a size",
    )
    p.add_argument(
        "--init-weights",
        help="start from these dermai weights (e.g. a pretrain run's model); FILE#K: member K of an ensemble file",
    )
    p.add_argument(
        "--train-seed",
        type=int,
        help="seed of initialisation, sampling and augmentation only (default: --seed); the split stays --seed's",
    )
    p.add_argument(
        "--reset-classifier",
        action="store_true",
        help="with --init-weights from a fine-tuned model: keep its trunk, draw a fresh classifier",
    )
    p.add_argument(
        "--augment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the fine-tuning augmentation (repeatable): e.g. hair_p=0.2, crop_scale=0.5,1.0, "
        "color_constancy=true; fields as in dermai.config.AugmentConfig",
    )
    p.add_argument(
        "--simclr-augment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the SimCLR pretraining augmentation (repeatable), same fields",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved settings (options given "
        "with it must agree with them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dermai", description="dermai: dermoscopy triage workbench")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="split manifests and dataset summaries")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    split = data_sub.add_parser("split", help="write a lesion/patient-grouped, stratified split manifest")
    _add_data_args(split)
    split.add_argument("--out", required=True, help="manifest CSV to write")
    split.add_argument("--label-fraction", type=float, default=1.0, help=LABEL_FRACTION_HELP)
    summary = data_sub.add_parser("summary", help="print image counts per split and class")
    _add_data_args(summary)

    for name, help_text in (
        ("train", "SimCLR pretraining then joint-loss fine-tuning"),
        ("pretrain", "SimCLR pretraining alone"),
        ("finetune", "joint-loss fine-tuning alone"),
    ):
        _add_train_args(sub.add_parser(name, help=help_text))
    _add_evaluation_parsers(sub)
    _add_predict_parser(sub)
    return parser


# predict and evaluate: by default as the weights' tier cut-offs were validated (dermai.predict.validated_tta)
TTA_OPTION: dict[str, Any] = {
    "action": argparse.BooleanOptionalAction,
    "default": None,
    "help": "average over the 8 flips/rotations (default: as the weights' tier cut-offs were validated, their "
    "JSON's serving.tta; a warning says when the choice differs)",
}
CAM_CHOICES = ("gradcam", "gradcam++", "eigencam", "scorecam", "layercam", "hirescam")  # dermai.saliency.CAM_METHODS


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser("predict", help="triage tier, probabilities and OOD verdict for image files")
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP, TIFF, WebP) or folders of them"
    )
    predict.add_argument("--weights", help="weights file or folder (default: the shipped weights/model.safetensors)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    predict.add_argument("--tta", **TTA_OPTION)
    predict.add_argument(
        "--cam",
        choices=CAM_CHOICES,
        help="saliency method for the --cam-out and --report-out overlays (default: gradcam)",
    )
    predict.add_argument("--cam-out", help="folder for <stem>_cam.png saliency overlays")
    predict.add_argument(
        "--report-out", help="folder for <stem>_report.html: a printable report with the image and its overlay"
    )
    predict.add_argument("--age", help="patient's age in years (patient context: used when the weights have it)")
    predict.add_argument("--sex", help="patient's sex: female or male (patient context)")
    predict.add_argument("--site", help="body site of the lesion, e.g. back, face, lower extremity (patient context)")
    predict.add_argument(
        "--metadata", help="CSV of per-image context (image_id or isic_id; age, sex, localization), by file stem"
    )
    predict.add_argument(
        "--csv",
        help="write a worklist CSV, most urgent first; each unreadable file is a row saying why",
    )


def _add_evaluation_parsers(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("evaluate", help="score weights on their own test split (or an external folder)")
    evaluate.add_argument("--weights", help="weights file or folder (default: the shipped weights/model.safetensors)")
    evaluate.add_argument("--data", help="data folder (default: the one in the weights' config; --split all needs it)")
    evaluate.add_argument(
        "--split",
        choices=["test", "val", "all"],
        default="test",
        help="all: every image of an external --data folder, less any the weights were trained or tuned on",
    )
    evaluate.add_argument("--manifest", help="the run's split manifest (default: rebuilt from the weights' config)")
    evaluate.add_argument("--tta", **TTA_OPTION)
    evaluate.add_argument("--saliency", action="store_true", help="CAM plausibility against lesion masks (slow)")
    evaluate.add_argument("--saliency-limit", type=_count, default=200, help="images sampled for --saliency (0 = all)")
    evaluate.add_argument("--n-boot", type=_count, default=1000, help="bootstrap resamples for the AUROC interval")
    evaluate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="fp32 repeats the model card's figures on any CPU; auto uses bf16 where the CPU has it (faster)",
    )
    evaluate.add_argument("--out", required=True, help="report JSON to write")
    evaluate.add_argument("--predictions", required=True, help="per-image predictions CSV to write")

    compare = sub.add_parser(
        "compare",
        help="two models on the same images (their split, or an external folder): paired differences with 95%% "
        "intervals",
    )
    compare.add_argument("weights_a", metavar="A", help="weights file or folder (the reference)")
    compare.add_argument("weights_b", metavar="B", help="weights file or folder (the challenger)")
    compare.add_argument("--data", help="data folder (default: the one in A's config; --split all needs it)")
    compare.add_argument("--manifest", help="the runs' split manifest (default: rebuilt from A's config)")
    compare.add_argument(
        "--split",
        choices=["val", "test", "all"],
        default="val",
        help="val for choices; test only to report; all: every image of an external --data folder, less any "
        "either model was trained or tuned on (the only split for models trained on different splits)",
    )
    compare.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations (default: off)")
    compare.add_argument("--n-boot", type=_count, default=1000, help="paired bootstrap resamples")
    compare.add_argument("--out", help="JSON to write the comparison to")

    calibrate = sub.add_parser("calibrate", help="fit temperature, operating points and OOD on validation data")
    calibrate.add_argument("--weights", required=True, help="weights to update in place")
    calibrate.add_argument("--data", help="data folder (default: the one in the weights' config)")
    calibrate.add_argument("--manifest", help="the run's split manifest (default: rebuilt from the weights' config)")
    calibrate.add_argument(
        "--refer-sensitivity",
        type=float,
        default=0.95,
        help="validation sensitivity the refer cut-off on p(malignant) must reach",
    )
    calibrate.add_argument(
        "--urgent-specificity",
        type=float,
        default=0.90,
        help="validation specificity the urgent cut-off on p(malignant) must reach",
    )
    calibrate.add_argument(
        "--ood-percentile",
        type=float,
        default=99.0,
        help="percentile of the validation images' OOD scores taken as the gate's threshold",
    )
    calibrate.add_argument("--tta", action="store_true", help=FIT_TTA_HELP)

    context = sub.add_parser(
        "context", help="fit the patient-context model (age, sex, body site) beside calibrated weights"
    )
    context.add_argument("--weights", required=True, help="calibrated weights whose JSON gains a 'context' block")
    context.add_argument("--data", help="data folder (default: the one in the weights' config)")
    context.add_argument("--manifest", help="the run's split manifest (default: rebuilt from the weights' config)")

    ensemble = sub.add_parser("ensemble", help="serve fine-tuned models as one (mean logits), calibrated on validation")
    ensemble.add_argument(
        "members", nargs="+", help="two or more weights files of one split; FILE#K is member K of an ensemble file"
    )
    ensemble.add_argument("--out", required=True, help="folder for the ensemble's model.safetensors (new)")
    ensemble.add_argument("--data", help="data folder (default: the one in the members' config)")
    ensemble.add_argument("--manifest", help="the members' split manifest (default: rebuilt from their config)")
    ensemble.add_argument("--tta", action="store_true", help=FIT_TTA_HELP)
    ensemble.add_argument(
        "--image-sizes",
        type=_size_list,
        help="each member's input size, comma-separated (e.g. 96,120; default: the size each was trained at); "
        "a member trained on random crops may score better a little above its training size: choose on validation",
    )

    runs = sub.add_parser("runs", help="list the runs folder's runs (status, best val AUROC, disk use) or delete one")
    runs.add_argument("--runs", help="runs folder (default: $DERMAI_RUNS, else runs/ in the project folder)")
    runs.add_argument("--delete", metavar="NAME", help="delete this run's folder (refused while it runs)")
    runs.add_argument(
        "--force", action="store_true", help="with --delete: delete even if a run that learns from it could not resume"
    )

    experiment = sub.add_parser("experiment", help="research experiments")
    experiment_sub = experiment.add_subparsers(dest="experiment", metavar="NAME", required=True)
    label = experiment_sub.add_parser("label-efficiency", help="SimCLR pretraining vs random init per label fraction")
    d = RunConfig()
    label.add_argument("--data", help=DATA_HELP)
    label.add_argument("--out", required=True, help="experiment folder (resumable)")
    label.add_argument(
        "--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="shares of the training labels to use"
    )
    label.add_argument("--seeds", type=int, default=3, help="N: run seeds 0..N-1")
    label.add_argument("--split-seed", type=int, default=d.data.seed, help="seed of the one shared split")
    label.add_argument("--image-size", type=int, default=d.train.image_size, help="input height and width in px")
    label.add_argument(
        "--pretrain-epochs", type=int, default=d.train.pretrain_epochs, help="SimCLR pretraining epochs per seed"
    )
    label.add_argument(
        "--finetune-epochs", type=int, default=d.train.finetune_epochs, help="fine-tuning epochs per run"
    )
    label.add_argument("--limit", type=_positive_int, help="use about this many images (stratified, whole lesions)")


def _run_config(args: argparse.Namespace, stage: str) -> RunConfig:
    cfg = RunConfig(stage=stage)
    cfg.data.data_dir = args.data
    cfg.data.seed = args.seed
    cfg.data.manifest = args.manifest
    cfg.data.val_fraction, cfg.data.test_fraction = args.val_fraction, args.test_fraction
    cfg.data.limit = args.limit
    cfg.data.cache_dir = args.cache_dir
    cfg.data.label_fraction = args.label_fraction
    t = cfg.train
    t.image_size, t.batch_size, t.lr, t.weight_decay = args.image_size, args.batch_size, args.lr, args.weight_decay
    t.image_width = args.image_width
    t.pretrain_epochs, t.finetune_epochs, t.warmup_epochs = (
        args.pretrain_epochs,
        args.finetune_epochs,
        args.warmup_epochs,
    )
    t.lambda_ntxent, t.temperature, t.label_smoothing = args.lambda_ntxent, args.temperature, args.label_smoothing
    t.early_stopping_patience, t.balanced_sampling = args.patience, not args.no_balanced_sampling
    t.swa_epochs, t.swa_lr = args.swa_epochs, args.swa_lr
    t.focal_gamma, t.mask_weight = args.focal_gamma, args.mask_weight
    t.mixup_alpha, t.cutmix_alpha = args.mixup_alpha, args.cutmix_alpha
    t.distill_from, t.distill_weight = args.distill_from, args.distill_weight
    t.precision, t.num_workers = args.precision, args.num_workers
    t.seed = args.seed if args.train_seed is None else args.train_seed
    cfg.augment = override_augment(cfg.augment, args.augment, "--augment")
    cfg.simclr_augment = override_augment(cfg.simclr_augment, args.simclr_augment, "--simclr-augment")
    return cfg


# Training options → the config fields they set: a resume compares these, for the options given, with the
# run's saved config (stage comes from the subcommand; --seed also sets train.seed unless --train-seed does).
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("data.data_dir",),
    "seed": ("data.seed",),
    "manifest": ("data.manifest",),
    "val_fraction": ("data.val_fraction",),
    "test_fraction": ("data.test_fraction",),
    "limit": ("data.limit",),
    "cache_dir": ("data.cache_dir",),
    "label_fraction": ("data.label_fraction",),
    "patience": ("train.early_stopping_patience",),
    "no_balanced_sampling": ("train.balanced_sampling",),
    "train_seed": ("train.seed",),
    **{
        name: (f"train.{name}",)
        for name in (
            "image_size",
            "image_width",
            "batch_size",
            "lr",
            "weight_decay",
            "pretrain_epochs",
            "finetune_epochs",
            "warmup_epochs",
            "lambda_ntxent",
            "temperature",
            "label_smoothing",
            "focal_gamma",
            "mask_weight",
            "mixup_alpha",
            "cutmix_alpha",
            "distill_weight",
            "swa_epochs",
            "swa_lr",
            "precision",
            "num_workers",
        )
    },
}


def _given_options(argv: Sequence[str]) -> set[str]:
    """The option names (argparse dests) `argv` sets itself, as opposed to defaults: parsed again with every
    default of its subcommand suppressed, so abbreviations and `--flag=value` count as argparse reads them."""
    parser = build_parser()
    chosen = vars(parser.parse_args(argv))["command"]
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in subcommands.choices[chosen]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def resume_fields(args: argparse.Namespace, given: set[str]) -> list[str]:
    """The dotted config fields a resume must find unchanged: the stage (the subcommand) and those the given
    options set (only the keys of --augment/--simclr-augment items)."""
    fields = ["stage"]
    for dest in sorted(given):
        fields += FLAG_FIELDS.get(dest, ())
    if "seed" in given and "train_seed" not in given:
        fields.append("train.seed")
    for section in ("augment", "simclr_augment"):
        if section in given:
            fields += [f"{section}.{item.partition('=')[0].strip()}" for item in getattr(args, section)]
    return list(dict.fromkeys(fields))


def _check_resume(args: argparse.Namespace, cfg: RunConfig) -> None:
    """Refuse `--resume` with options that differ from the run's saved settings, listing each ("train.
    finetune_epochs: saved 30, given 80"): the trainer continues with the saved ones, so such an option
    would be ignored without a word. Options left at their defaults are not compared (the app's Resume passes
    none), and a folder with nothing to resume is left for the trainer to report."""
    from pathlib import Path

    from dermai.config import config_differences, run_config_from_dict, to_dict

    path = Path(args.out) / "config.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
        saved_config = to_dict(run_config_from_dict(saved["config"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable run configuration ({exc})") from None
    given = _given_options(args.argv)
    differ = config_differences(saved_config, to_dict(cfg), resume_fields(args, given))
    if "init_weights" in given and not _same_path(saved.get("init_weights"), args.init_weights):
        differ.append(f"init_weights: saved {saved.get('init_weights')!r}, given {args.init_weights!r}")
    saved_teacher = saved_config["train"].get("distill_from")
    if "distill_from" in given and not _same_path(saved_teacher, args.distill_from):
        differ.append(f"train.distill_from: saved {saved_teacher!r}, given {args.distill_from!r}")
    if "reset_classifier" in given and not saved.get("reset_classifier"):
        differ.append(f"reset_classifier: saved {bool(saved.get('reset_classifier'))}, given True")
    if differ:
        raise ValueError(
            f"{args.out}: --resume continues with the run's saved settings, and options given differ from them "
            f"({'; '.join(differ)}); drop those options, or start a new run in another --out folder"
        )


def _same_path(saved: str | None, given: str | None) -> bool:
    """Whether two recorded paths name the same file (`data.same_file`), where None (no file) matches only None."""
    from dermai.data import same_file

    if saved is None or given is None:
        return saved == given
    return same_file(saved, given)


# The files `predict --cam-out DIR` / `--report-out DIR` write per image: DIR/<stem><suffix>.
CAM_SUFFIX = "_cam.png"
REPORT_SUFFIX = "_report.html"


# Options naming a file or folder a command writes (argparse dest → flag): each is a path, whose last name is new.
OUTPUT_FLAGS = {
    "out": "--out",
    "predictions": "--predictions",
    "csv": "--csv",
    "cam_out": "--cam-out",
    "report_out": "--report-out",
}


def _check_output_names(args: argparse.Namespace) -> None:
    """Refuse, before anything is made, an output whose last name Windows cannot hold ("runs/CON", "p.csv."), by
    the rule the app applies to run names (`safe_write.windows_name_problem`): a run folder or file so named could not
    be copied to Windows. `--resume` continues a run folder made already, and `experiment` an existing folder (it
    resumes its grid there), so their names are not judged again; "." and ".." name folders that exist, not new
    ones."""
    from dermai.safe_write import windows_name_problem

    for dest, flag in OUTPUT_FLAGS.items():
        value = getattr(args, dest, None)
        if not value or (dest == "out" and _continues_folder(args, value)):
            continue
        name = Path(value).name
        problem = None if name in ("", ".", "..") else windows_name_problem(name)
        if problem is not None:
            shown = repr(name) if value == name else f"{name!r} ({value})"
            raise ValueError(f"{flag} {shown}: {problem}")


def _continues_folder(args: argparse.Namespace, out: str) -> bool:
    """Whether --out names a folder this command carries on rather than makes: a run with --resume, or an
    experiment's existing folder (`experiment.label_efficiency` resumes the grid found there)."""
    return bool(getattr(args, "resume", False)) or (args.command == "experiment" and Path(out).is_dir())


def _check_split_source(args: argparse.Namespace) -> None:
    """Refuse --manifest with --limit: the manifest names the images and their sides itself, so a limit could
    only drop some of them (once "image 'X' is not in the data folder", which blamed the folder)."""
    if args.manifest and args.limit:
        raise ValueError(
            f"give --manifest or --limit, not both: the manifest {args.manifest} names the images to use itself"
        )


def _cmd_data(args: argparse.Namespace) -> int:
    from dermai.data import load_dataset
    from dermai.splits import attach_splits, summary_table, write_manifest

    _check_split_source(args)
    loaded = load_dataset(args.data)
    if args.data_command == "split":  # the manifest written must not replace what the split is read from
        data_files, data_folders = _data_folder_files(str(loaded.root))
        _refuse_clashing_outputs(
            [("--out", args.out)],
            {**data_files, "the --manifest read": [args.manifest] if args.manifest else []},
            data_folders,
        )
    dataset = attach_splits(
        loaded,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        label_fraction=getattr(args, "label_fraction", 1.0),
        manifest=args.manifest,
        limit=args.limit,
    )
    if args.data_command == "split":
        path = write_manifest(dataset, args.out)
        print(f"wrote {path} ({len(dataset.meta)} images, grouped by {dataset.group_key})")
        if args.limit and len(dataset.meta) > 1.25 * args.limit:  # --limit takes whole groups: about, not exactly
            print(
                f"note: --limit {args.limit} gave {len(dataset.meta)} images: every class keeps at least 3 lesions "
                "(or patients), so that each split holds some",
                file=sys.stderr,
            )
    else:
        print(f"{dataset.root} ({dataset.mode}, grouped by {dataset.group_key})")
        print(summary_table(dataset).to_string())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dermai.train import train

    _check_split_source(args)
    stage = "both" if args.command == "train" else args.command
    cfg = _run_config(args, stage)
    if args.resume:
        _check_resume(args, cfg)
    result = train(
        cfg,
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        command="python -m dermai " + shlex.join(args.argv),
        init_weights=args.init_weights,
        reset_classifier=args.reset_classifier,
    )
    if os.environ.get("RANK", "0") != "0":
        return 0 if result.status == "finished" else 3
    print(
        json.dumps(
            {
                "status": result.status,
                "run_dir": str(result.run_dir),
                "weights": str(result.weights) if result.weights else None,
                "best_val_auroc": result.best_score,
            }
        )
    )
    return 0 if result.status == "finished" else 3


def _predict_footer(calibrated: bool) -> str:
    """The line under predict's table: the tiers' cut-offs are validated only for calibrated weights."""
    if calibrated:
        return "Tiers use cut-offs validated on held-out data: a research and triage aid, not a diagnosis."
    return "No tiers: these weights store no validated cut-offs (run `python -m dermai calibrate`); research use only."


def _warn_if_untrained(*paths: str | None) -> None:
    """Say on stderr when weights to be scored have a classifier that never learned (a pretraining run): their
    figures are a baseline at best, not a model's."""
    from dermai.weights import WeightsError, read_meta, untrained_classifier

    for path in paths:
        try:
            untrained = untrained_classifier(read_meta(path))
        except WeightsError:
            continue  # the command itself says what is wrong with the file
        if untrained:
            print(f"warning: {_weights_label(path)}: {untrained}; its figures measure chance", file=sys.stderr)


def _warn_if_tta_differs(path: str | None, tta: bool | None, meta: dict[str, Any] | None = None) -> None:
    """Say on stderr, before any scoring, when --tta/--no-tta differs from the setting the weights' tier cut-offs
    were validated with: the tiers and their sensitivity and specificity then describe another score. `meta`:
    the weights' JSON when already loaded, else it is read here."""
    from dermai.predict import tta_mismatch
    from dermai.weights import WeightsError, read_meta

    try:
        mismatch = tta_mismatch(meta if meta is not None else read_meta(path), tta)
    except WeightsError:
        return  # the command itself says what is wrong with the file
    if mismatch:
        print(f"warning: {_weights_label(path)}: {mismatch}", file=sys.stderr)


def _weights_label(path: str | None) -> str:
    """The weights a warning is about: as given, else the shipped default's file (not a bare "the weights")."""
    from dermai.weights import DEFAULT_WEIGHTS

    return path or f"the default weights ({DEFAULT_WEIGHTS})"


def _weights_files(path: str | None) -> list[str]:
    """The files a weights argument stands for, which no output may replace: its .safetensors and .json and,
    for an ensemble, its recorded members' pairs where they are found. Unresolvable weights give none here:
    the command itself names what is wrong with them."""
    from pathlib import Path

    from dermai.data import PROJECT_ROOT
    from dermai.weights import WeightsError, read_meta, resolve_weights_path

    try:
        weights = resolve_weights_path(path)
    except (WeightsError, OSError):
        return []
    files = [weights, weights.with_suffix(".json")]
    try:
        members = read_meta(weights).get("ensemble")
    except (WeightsError, OSError):
        members = None
    for member in members if isinstance(members, list) else []:
        recorded = member.get("weights") if isinstance(member, dict) else None
        if not isinstance(recorded, str):
            continue
        name = Path(recorded.partition("#")[0])
        for found in (name, PROJECT_ROOT / name):
            if found.suffix == ".safetensors" and found.is_file():
                files += [found, found.with_suffix(".json")]
                break
    return [str(f) for f in files]


def _inside(path: str, folder: str) -> bool:
    """Whether `path` names a file in `folder` or below it, as written or once the links of its folders (not of
    the file itself: an atomic write replaces a link, not what it points to) are followed."""
    absolute = os.path.abspath(path)
    followed = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    pairs = ((absolute, os.path.abspath(folder)), (followed, os.path.realpath(folder)))
    return any(os.path.commonpath([file, base]) == base for file, base in pairs)


def _refuse_clashing_outputs(
    outputs: Sequence[tuple[str, str | None]],
    inputs: dict[str, Sequence[str]],
    folders: dict[str, Sequence[str]] | None = None,
) -> None:
    """Refuse, before any work, an output that is the same file as another output (the second write would
    replace the first while the command reports both), as one of the command's inputs (the weights' own
    JSON or tensors, a manifest, a metadata CSV, an image) or that lies in one of `folders` (a data folder's
    images or masks, where any file may be read): a ValueError naming both options and the file.
    `outputs` pairs each file to be written with the option that names it (or its folder)."""
    from dermai.data import same_file

    given = [(flag, path) for flag, path in outputs if path]
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[:i]:
            if same_file(path, other):
                raise ValueError(f"{other_flag} and {flag} both name {path}: give each output its own file")
        for what, files in inputs.items():
            for existing in files:
                if same_file(path, existing):
                    raise ValueError(f"{flag} {path} is {what} ({existing}): writing there would destroy it")
        for what, places in (folders or {}).items():
            for folder in places:
                if _inside(path, folder):
                    raise ValueError(
                        f"{flag} {path} is in {what} ({folder}): writing there would destroy its files; "
                        "write outside it"
                    )


def _data_folder_files(
    data: str | None, weights: str | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What of a data folder no output may replace, as `_refuse_clashing_outputs`'s inputs and folders: its
    metadata CSV, and the folders of its images and of its lesion masks. The folder is `data`, else the one the
    weights' config records (as `evaluate.weights_dataset` picks it), else the default; one that cannot be found
    gives none here: the command itself then names what is wrong."""
    from dermai.data import DataError, find_metadata_csv, index_images, resolve_data_root, weights_data_folder
    from dermai.pixel_cache import MASK_FOLDER
    from dermai.weights import WeightsError, read_meta

    try:
        if data is None:
            recorded = weights_data_folder(read_meta(weights))
            if recorded is not None and recorded.is_dir():
                data = str(recorded)
        root = resolve_data_root(data)
        csv_path = find_metadata_csv(root)
    except (DataError, WeightsError, OSError):
        return {}, {}
    folders = {str(image.parent) for image in index_images(root).values()} | {str(root / MASK_FOLDER)}
    return {"the data folder's metadata CSV": [str(csv_path)]}, {"the data folder's images or masks": sorted(folders)}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dermai.evaluate import evaluate, summary_text, write_outputs
    from dermai.safe_write import check_writable

    data_files, data_folders = _data_folder_files(args.data, args.weights)
    _refuse_clashing_outputs(
        [("--out", args.out), ("--predictions", args.predictions)],
        {
            "a file of the weights": _weights_files(args.weights),
            "the manifest": [args.manifest] if args.manifest else [],
            **data_files,
        },
        data_folders,
    )
    for target in (args.out, args.predictions):  # before minutes of scoring, not after
        check_writable(Path(target))
    _warn_if_untrained(args.weights)
    _warn_if_tta_differs(args.weights, args.tta)

    report, predictions = evaluate(
        args.weights,
        args.data,
        split=args.split,
        manifest=args.manifest,
        tta=args.tta,
        n_boot=args.n_boot,
        saliency=args.saliency,
        saliency_limit=args.saliency_limit,
        precision=args.precision,
    )
    write_outputs(report, predictions, args.out, args.predictions)
    print(summary_text(report))
    print(f"wrote {args.out} and {args.predictions}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dermai.evaluate import compare_weights, comparison_text
    from dermai.safe_write import check_writable, write_json_atomic

    if args.out:
        data_files, data_folders = _data_folder_files(args.data, args.weights_a)
        _refuse_clashing_outputs(
            [("--out", args.out)],
            {
                "a file of the weights": _weights_files(args.weights_a) + _weights_files(args.weights_b),
                "the manifest": [args.manifest] if args.manifest else [],
                **data_files,
            },
            data_folders,
        )
        check_writable(Path(args.out))
    _warn_if_untrained(args.weights_a, args.weights_b)
    result = compare_weights(
        args.weights_a,
        args.weights_b,
        args.data,
        split=args.split,
        tta=args.tta,
        n_boot=args.n_boot,
        manifest=args.manifest,
    )
    print(comparison_text(result))
    if args.out:
        write_json_atomic(Path(args.out), result)
        print(f"wrote {args.out}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from dermai import disk_space, jobs, run_deletion, run_table

    _check_runs_options(args.delete, args.force)
    root = jobs.runs_dir(args.runs)
    if root.exists() and not root.is_dir():
        raise jobs.JobError(f"runs folder {root}: not a folder")
    if args.delete:
        run = root / jobs.check_run_name(args.delete)
        if not run_deletion.is_listed_run(run):  # only what `runs` lists: another folder there is someone's own
            raise jobs.JobError(f"no run named {args.delete!r} in the runs folder {root}")
        dependents = run_deletion.dependent_runs(run, root)
        for dependent in dependents:
            print(f"note: {dependent.consequence().replace('`', '')}", file=sys.stderr)
        if any(d.breaks for d in dependents) and not args.force:
            raise jobs.JobError(f"{run}: not deleted, another run still needs it (above); add --force to delete it")
        freed = run_deletion.delete_run(run, root)
        print(f"deleted {run} ({freed / 1e9:.2f} GB freed)")
        return 0
    if not root.exists():
        print(f"no runs folder at {root} yet: 0 runs")
        return 0
    table = run_table.list_runs(root)
    if not table.empty:
        figures = {"best_val_auroc": "{:.3f}".format, "disk_gb": "{:.2f}".format}
        print(table[run_table.shown_run_columns(table)].to_string(index=False, formatters=figures, na_rep="-"))
    used, free = table["disk_gb"].sum(), disk_space.free_bytes(root) / 1e9
    print(f"{len(table)} runs in {root} take {used:.2f} GB; {free:.1f} GB free on its disk")
    return 0


def _check_runs_options(delete: str | None, force: bool) -> None:
    """Refuse `runs` options that would otherwise be ignored without a word: `--delete ""` listed the runs
    instead, and `--force` alone listed them too, as if something had been forced."""
    if delete is not None and not delete.strip():
        raise ValueError("--delete needs a run's name (as `runs` lists them), got an empty one")
    if force and delete is None:
        raise ValueError("--force goes with --delete NAME (delete a run another still needs); nothing was named")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from dermai.serving import fit_serving

    fitted = fit_serving(
        args.weights,
        args.data,
        manifest=args.manifest,
        refer_sensitivity=args.refer_sensitivity,
        urgent_specificity=args.urgent_specificity,
        ood_percentile=args.ood_percentile,
        tta=args.tta,
    )
    print(json.dumps(fitted, indent=2, default=str))
    return 0


def _cmd_context(args: argparse.Namespace) -> int:
    from dermai.serving import fit_context

    print(json.dumps(fit_context(args.weights, args.data, manifest=args.manifest), indent=2, default=str))
    return 0


def _size_list(text: str) -> list[int]:
    """--image-sizes '96,120' → [96, 120]; a bad list is a usage error naming it."""
    from dermai.ensemble import EnsembleError, parse_image_sizes

    try:
        return parse_image_sizes(text)
    except EnsembleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: cleanup code on the way out runs, and main() reports "interrupted"."""
    raise KeyboardInterrupt


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from dermai.ensemble import build_ensemble

    command = "python -m dermai " + shlex.join(args.argv)
    fitted = build_ensemble(
        args.members,
        args.out,
        command,
        args.data,
        manifest=args.manifest,
        tta=args.tta,
        image_sizes=args.image_sizes,
    )
    print(json.dumps({"weights": fitted["weights"], "val_auroc": fitted["val_metrics"]["val_auroc"]}))
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from dermai.experiment import label_efficiency

    base = RunConfig()
    base.data.data_dir, base.data.limit, base.data.seed = args.data, args.limit, args.split_seed
    base.train.image_size = args.image_size
    base.train.pretrain_epochs, base.train.finetune_epochs = args.pretrain_epochs, args.finetune_epochs
    command = ["python", "-m", "dermai", "experiment", "label-efficiency", "--out", args.out]
    command += ["--data", args.data] if args.data else []
    command += ["--fractions", *map(str, args.fractions), "--seeds", str(args.seeds)]
    command += ["--split-seed", str(args.split_seed), "--image-size", str(args.image_size)]
    command += ["--pretrain-epochs", str(args.pretrain_epochs), "--finetune-epochs", str(args.finetune_epochs)]
    command += ["--limit", str(args.limit)] if args.limit else []
    summary = label_efficiency(base, args.out, args.fractions, args.seeds, command=shlex.join(command), log=print)
    print(summary.to_string(index=False))
    return 0


def _predict_outputs(
    predictor: Predictor,
    intake: IntakeResult,
    result: Prediction,
    image: str,
    stem: str,
    args: argparse.Namespace,
) -> dict[str, str | None]:
    """Write the saliency overlay (--cam-out) and the HTML report (--report-out) of one image, each
    atomically, named from `stem` (distinct within the batch); returns their paths as text (None where not
    asked for)."""
    import io
    from pathlib import Path

    from PIL import Image

    from dermai.report import prediction_html
    from dermai.safe_write import atomic_write_bytes

    written: dict[str, str | None] = {"cam": None, "report": None}
    if not (args.cam_out or args.report_out):
        return written
    explained = predictor.explain(intake, method=args.cam or "gradcam", shown=result)  # the class printed
    if args.cam_out:
        buffer = io.BytesIO()
        Image.fromarray(explained.overlay).save(buffer, format="PNG")
        written["cam"] = str(atomic_write_bytes(Path(args.cam_out) / f"{stem}{CAM_SUFFIX}", buffer.getvalue()))
    if args.report_out:
        page = prediction_html(
            result, Path(image).name, str(predictor.path), intake.image, explained.overlay, explained.method
        )
        written["report"] = str(atomic_write_bytes(Path(args.report_out) / f"{stem}{REPORT_SUFFIX}", page.encode()))
    return written


def _print_prediction(shown: str, result: Prediction, written: dict[str, str | None], header: bool) -> None:
    """One image's table row (`shown`: its name, distinct within the batch), then its warnings, context and
    written files, indented."""
    from dermai.context import describe as describe_context
    from dermai.worklist import UNLIKE_TRAINING

    if header:
        print(f"{'IMAGE':<32} {'TIER':<11} {'P(MALIGNANT)':>12}  {'TOP DIAGNOSIS':<14} {UNLIKE_TRAINING.upper()}")
    top = max(result.probabilities, key=result.probabilities.__getitem__)
    ood = "n/a" if result.ood is None else "YES" if result.ood else "no"
    top_text = f"{top} {result.probabilities[top]:.2f}"
    print(f"{shown:<32} {result.tier:<11} {result.p_malignant:>12.3f}  {top_text:<14} {ood}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    if result.context:
        effects = result.context_effects or {}
        moved = ", ".join(f"{k} {effects[k]:+.3f}" for k in result.context)
        print(
            f"  with patient context ({describe_context(result.context)}); image alone: p "
            f"{result.p_malignant_image_only:.3f}; each field's effect: {moved}"
        )
    for label, key in (("saliency", "cam"), ("report", "report")):
        if written[key]:
            print(f"  {label}: {written[key]}")


def _write_partial_worklist(path: Path, entries: Sequence[WorklistEntry], images: Sequence[str]) -> None:
    """Keep what an interrupted or failed `predict --csv` batch scored: an hour of scores must not go with the
    Ctrl-C (or the error) that stops it. The rows so far are written atomically to `path`, and a "not scored"
    row for each image the batch never reached (`worklist.unscored`), so the file says it is partial; a failure
    to write them is reported without hiding the reason the batch stopped."""
    from dermai.safe_write import atomic_write_bytes
    from dermai.worklist import unscored, worklist, worklist_csv

    if not entries:
        return
    done = {entry.image for entry in entries}
    rest = [unscored(image) for image in images if image not in done]
    try:
        atomic_write_bytes(path, worklist_csv(worklist([*entries, *rest])))
    except OSError as exc:
        print(f"warning: the {len(entries)} images scored so far could not be kept: {exc}", file=sys.stderr)
        return
    print(
        f"wrote {path}: PARTIAL worklist, {len(entries)} of {len(images)} images (the batch stopped before the "
        f"rest, listed as not scored); rerun the command to score them all",
        file=sys.stderr,
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    """Goes on past a file it cannot read as an image: one `warning:` line names it (and with --csv it is a
    worklist row), the other images are scored, and the exit is 1 when any file could not be read. A single
    file given alone that cannot be read is bad input: one `error:` line, exit 2, as any other error
    (`worklist.score_images`), which stops the batch."""
    from pathlib import Path

    from dermai.context import read_context_csv, unknown_site_warnings
    from dermai.predict import UNAVAILABLE_MEANING, Predictor
    from dermai.safe_write import atomic_write_bytes, check_writable
    from dermai.worklist import (
        distinct_names,
        image_files,
        score_images,
        tier_counts,
        worklist,
        worklist_csv,
    )

    if args.cam and not (args.cam_out or args.report_out):
        raise ValueError("--cam needs --cam-out DIR (or --report-out DIR) to write the overlays to")
    if args.metadata and (args.age or args.sex or args.site):
        raise ValueError("give either --metadata or --age/--sex/--site, not both")
    images = image_files(args.images)
    names = distinct_names(images)  # (shown, stem) per image: its row and its output files' names
    if args.csv:
        per_image_files = [
            (flag, str(Path(folder) / f"{stem}{suffix}"))
            for flag, folder, suffix in (
                ("--cam-out", args.cam_out, CAM_SUFFIX),
                ("--report-out", args.report_out, REPORT_SUFFIX),
            )
            if folder
            for _, stem in names
        ]
        _refuse_clashing_outputs(
            [*per_image_files, ("--csv", args.csv)],
            {
                "a file of the weights": _weights_files(args.weights),
                "the --metadata file": [args.metadata] if args.metadata else [],
                "an image to score": images,
            },
        )
        check_writable(Path(args.csv))  # before scoring every image, not after
    per_image = read_context_csv(args.metadata) if args.metadata else None  # its errors before loading a model
    if per_image is not None:
        missing = [image for image in images if Path(image).stem not in per_image]
        if missing:
            raise ValueError(f"{args.metadata}: no row for image {Path(missing[0]).stem!r} ({missing[0]})")
    predictor = Predictor.from_weights(args.weights)
    _warn_if_tta_differs(args.weights, args.tta, predictor.meta)
    if per_image is not None and predictor.context_model:  # each row's unknown site, named once
        for line in unknown_site_warnings(args.metadata, predictor.context_sites):
            print(f"warning: {line}", file=sys.stderr)
    if not predictor.operating_points:  # else every tier reads "unavailable" with no reason given
        print(f"warning: {_weights_label(args.weights)}: {UNAVAILABLE_MEANING}", file=sys.stderr)
    shared = predictor.parse_context(args.age, args.sex, args.site)
    context = (lambda image: per_image[Path(image).stem]) if per_image is not None else (lambda image: shared)
    entries: list[WorklistEntry] = []
    keep_going = bool(args.csv) or len(images) > 1  # one file alone: its `error:` line, as for any bad input
    scored = score_images(predictor, ((image, image) for image in images), args.tta, context, keep_going)
    skipped = "listed as unreadable" if args.csv else "not scored"
    try:
        for (entry, intake), (shown, stem) in zip(scored, names, strict=True):
            image, result = entry.image, entry.prediction
            if result is None or intake is None:
                print(f"warning: {entry.error} ({skipped})", file=sys.stderr)
                entries.append(entry)
                continue
            written = _predict_outputs(predictor, intake, result, image, stem, args)
            if args.json:
                print(json.dumps({"image": image, **result.to_dict(), **written}), flush=True)
            else:
                _print_prediction(shown, result, written, header=not any(e.prediction for e in entries))
            entries.append(entry)
    except (KeyboardInterrupt, Exception):
        if args.csv:
            _write_partial_worklist(Path(args.csv), entries, [str(image) for image in images])
        raise
    if not args.json:
        print(_predict_footer(bool(predictor.operating_points)))
    unreadable = sum(entry.prediction is None for entry in entries)
    if not args.csv:
        if unreadable:
            print(f"{unreadable} of {len(entries)} files could not be read (named above)", file=sys.stderr)
        return 1 if unreadable else 0
    table = worklist(entries)
    atomic_write_bytes(Path(args.csv), worklist_csv(table))
    counts = ", ".join(f"{tier} {n}" for tier, n in tier_counts(table).items())
    print(f"wrote {args.csv}: {len(table)} images, most urgent first ({counts})", file=sys.stderr)
    return 1 if unreadable else 0


COMMANDS = {
    "predict": _cmd_predict,
    "data": _cmd_data,
    "train": _cmd_train,
    "pretrain": _cmd_train,
    "finetune": _cmd_train,
    "evaluate": _cmd_evaluate,
    "compare": _cmd_compare,
    "calibrate": _cmd_calibrate,
    "context": _cmd_context,
    "ensemble": _cmd_ensemble,
    "experiment": _cmd_experiment,
    "runs": _cmd_runs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded as the run's command
    # The app's Cancel sends SIGTERM: handled as Ctrl-C, so the cleanup on the way out runs (no half-decoded pixel
    # cache, no uncalibrated ensemble is left behind) and a training run reads "interrupted", resumable.
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works there only
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        _check_output_names(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`predict … | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error while flushing at exit
        return 141
    except (ValueError, RuntimeError, OSError) as exc:  # DataError, WeightsError, TrainingError, IntakeError…
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
