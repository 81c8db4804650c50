"""Training throughput, three ways, same machine, resolution and batch (two views per image in each):

  (a) the paper's loop re-created: fp32, every JPEG decoded with PIL each step, torchvision per-image
      transforms, DataLoader num_workers=0;
  (b) dermai's training pipeline: `dermai.train.train` (cached uint8 pixels, batched tensor augmentation,
      bf16 autocast where supported, channels_last), images/s read from its own metrics stream;
  (c) the model's forward+backward+step alone on ready tensors (dermai's precision): the compute limit.

Usage: python bench/train_throughput.py [--data DIR] [--image-size 64] [--batch-size 64] [--steps 16]
The last line prints images/s of each and the ratios b/a and b/c.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dermai.augment import paper_transform  # noqa: E402
from dermai.config import AugmentConfig, RunConfig  # noqa: E402
from dermai.data import DataError, load_dataset  # noqa: E402
from dermai.inference import autocast_for  # noqa: E402
from dermai.losses import joint_loss, nt_xent  # noqa: E402
from dermai.model import SimCLRResNet18  # noqa: E402
from dermai.splits import attach_splits  # noqa: E402
from dermai.train import read_metrics, train  # noqa: E402


class PaperDataset(torch.utils.data.Dataset):
    """Decode the JPEG and transform it on every access, as the paper's code did (two views here)."""

    def __init__(self, paths: list[str], labels: list[int], size: int) -> None:
        self.paths, self.labels, self.transform = paths, labels, paper_transform(AugmentConfig(), size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            image = image.convert("RGB")
            return self.transform(image), self.transform(image), self.labels[i]


def paper_loop(paths: list[str], labels: list[int], size: int, batch: int, steps: int) -> float:
    model = SimCLRResNet18(7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        PaperDataset(paths, labels, size), batch_size=batch, shuffle=True, num_workers=0, drop_last=True
    )
    times: list[float] = []
    it = iter(loader)
    for step in range(steps + 2):
        t0 = time.perf_counter()
        try:
            a, b, y = next(it)
        except StopIteration:
            it = iter(loader)
            a, b, y = next(it)
        feats = model.features(torch.cat([a, b]))
        z = model.project(feats)
        logits = model.classifier(feats)
        loss, _ = joint_loss(logits[:batch], logits[batch:], y, nt_xent(z[:batch], z[batch:]), 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def dermai_pipeline(data: str, size: int, batch: int, steps: int, limit: int) -> float:
    cfg = RunConfig(stage="finetune")
    cfg.data.data_dir, cfg.data.limit = data, limit
    cfg.train.image_size, cfg.train.batch_size, cfg.train.finetune_epochs, cfg.train.log_every = size, batch, 1, 1
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run")  # fills the pixel cache for this size (not timed)
        runs = []
        for r in range(max(1, -(-steps // 8))):
            train(cfg, Path(tmp) / f"timed{r}")
            runs += [rec["images_per_s"] for rec in read_metrics(Path(tmp) / f"timed{r}") if rec["kind"] == "step"][2:]
    return statistics.median(runs)


def compute_limit(size: int, batch: int, steps: int) -> float:
    model = SimCLRResNet18(7).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(2 * batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        with autocast_for(torch.device("cpu"), "auto"):
            feats = model.features(x)
            z, logits = model.project(feats), model.classifier(feats)
        loss = F.cross_entropy(torch.cat([logits[:batch], logits[batch:]]).float(), torch.cat([y, y]))
        loss = loss + 0.5 * nt_xent(z[:batch], z[batch:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ham10000", help="data folder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=64, help="input size in px (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    parser.add_argument(
        "--steps",
        type=int,
        default=16,
        help="steps timed in (a) and (c) after 2 warm-up steps; (b) trains one epoch per 8 (default: %(default)s)",
    )
    args = parser.parse_args()
    limit = args.batch_size * 12  # ~8 labelled training batches per epoch after the 70/15/15 split
    try:
        dataset = attach_splits(load_dataset(args.data), limit=limit)
    except DataError as exc:  # named, as the CLI names it
        parser.error(str(exc))
    train_rows = dataset.meta[dataset.meta["split"] == "train"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.image_size}px, batch {args.batch_size}")
    a = paper_loop(list(train_rows["path"]), list(train_rows["label"]), args.image_size, args.batch_size, args.steps)
    print(f"(a) paper loop (fp32, PIL decode each step, workers=0): {a:.1f} images/s", flush=True)
    b = dermai_pipeline(args.data, args.image_size, args.batch_size, args.steps, limit)
    print(f"(b) dermai training pipeline: {b:.1f} images/s", flush=True)
    c = compute_limit(args.image_size, args.batch_size, args.steps)
    print(f"(c) model forward+backward on ready tensors: {c:.1f} images/s", flush=True)
    print(f"a={a:.1f} b={b:.1f} c={c:.1f} images/s (two views each); b/a={b / a:.2f} b/c={b / c:.2f}")


if __name__ == "__main__":
    main()
