"""`python -m dermai …` subcommands. Thin: parse arguments, call the core, print; errors become one
`error: …` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from dermai.config import RunConfig


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data folder (default: $DERMAI_DATA, ./data/ham10000, ../shared/data/ham10000)")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--manifest", help="use this split manifest instead of computing one")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--limit", type=int, help="use about this many images (stratified, whole lesions)")
    p.add_argument("--cache-dir", help="pixel cache folder (default $DERMAI_CACHE or ~/.cache/dermai)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    d = RunConfig().train
    p.add_argument("--out", required=True, help="run folder (config, metrics.jsonl, checkpoints, weights)")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-fraction", type=float, default=1.0)
    p.add_argument("--lambda", dest="lambda_ntxent", type=float, default=d.lambda_ntxent, help="NT-Xent weight λ")
    p.add_argument("--temperature", type=float, default=d.temperature, help="NT-Xent temperature τ")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--patience", type=int, default=d.early_stopping_patience, help="early stopping (0 = off)")
    p.add_argument("--no-balanced-sampling", action="store_true", help="use class weights instead")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--init-weights", help="start from these dermai weights (e.g. a pretrain run's model)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dermai", description="dermai: dermoscopy triage workbench")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="split manifests and dataset summaries")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    split = data_sub.add_parser("split", help="write a lesion/patient-grouped, stratified split manifest")
    _add_data_args(split)
    split.add_argument("--out", required=True, help="manifest CSV to write")
    split.add_argument("--label-fraction", type=float, default=1.0)
    summary = data_sub.add_parser("summary", help="print image counts per split and class")
    _add_data_args(summary)

    for name, help_text in (
        ("train", "SimCLR pretraining then joint-loss fine-tuning"),
        ("pretrain", "SimCLR pretraining alone"),
        ("finetune", "joint-loss fine-tuning alone"),
    ):
        _add_train_args(sub.add_parser(name, help=help_text))
    return parser


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
    t.pretrain_epochs, t.finetune_epochs, t.warmup_epochs = (
        args.pretrain_epochs,
        args.finetune_epochs,
        args.warmup_epochs,
    )
    t.lambda_ntxent, t.temperature, t.label_smoothing = args.lambda_ntxent, args.temperature, args.label_smoothing
    t.early_stopping_patience, t.balanced_sampling = args.patience, not args.no_balanced_sampling
    t.precision, t.num_workers, t.seed = args.precision, args.num_workers, args.seed
    return cfg


def _cmd_data(args: argparse.Namespace) -> int:
    from dermai.data import attach_splits, load_dataset, summary_table, write_manifest

    dataset = attach_splits(
        load_dataset(args.data),
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
    else:
        print(f"{dataset.root} ({dataset.mode}, grouped by {dataset.group_key})")
        print(summary_table(dataset).to_string())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dermai.train import train

    stage = "both" if args.command == "train" else args.command
    result = train(
        _run_config(args, stage),
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        command="python -m dermai " + " ".join(sys.argv[1:]),
        init_weights=args.init_weights,
    )
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


COMMANDS = {"data": _cmd_data, "train": _cmd_train, "pretrain": _cmd_train, "finetune": _cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:  # DataError, WeightsError, TrainingError, IntakeError…
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
