"""Shared fixtures: the real HAM10000 copy in ../shared (read-only) and small synthetic folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
HAM = (REPO / ".." / "shared" / "data" / "ham10000").resolve()


# The longest test files (minutes each, mostly subprocesses and a watchdog's wait), collected first: `make test`
# runs the suite on two workers (pytest-xdist, one file per worker at a time, in this order: its
# --no-loadscope-reorder), and a long file started last would leave one worker busy alone at the end.
LONG_FIRST = (
    "test_gpu_members_script.py",
    "test_ship_script.py",
    "test_gpu_recipe_script.py",
    "test_experiment.py",
    "test_train.py",
    "test_swa.py",
    "test_distill.py",
    "test_ensemble.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the suite's files longest first (`LONG_FIRST`), the rest as collected."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes pixel caches to its own temp dir, never to ~/.cache."""
    monkeypatch.setenv("DERMAI_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: one thread avoids OpenMP contention (5-20x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ham_root() -> Path:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    return HAM


def make_folder(
    root: Path,
    rows: list[dict],
    size: tuple[int, int] = (40, 30),
    csv_name: str = "metadata.csv",
    ext: str = ".jpg",
    id_column: str = "image_id",
) -> Path:
    """A synthetic dermoscopy folder: coloured images named by id in a subfolder, plus the CSV."""
    rng = np.random.default_rng(0)
    (root / "imgs" / "nested").mkdir(parents=True, exist_ok=True)
    for row in rows:
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / "nested" / f"{row[id_column]}{ext}")
    pd.DataFrame(rows).to_csv(root / csv_name, index=False)
    return root


def ham_rows(n_lesions_per_dx: int = 4, images_per_lesion: int = 2) -> list[dict]:
    rows = []
    for dx in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"):
        for lesion in range(n_lesions_per_dx):
            for k in range(images_per_lesion):
                rows.append(
                    {
                        "lesion_id": f"L_{dx}_{lesion}",
                        "image_id": f"I_{dx}_{lesion}_{k}",
                        "dx": dx,
                        "dx_type": "histo",
                        "age": 50,
                        "sex": "male",
                        "localization": "back",
                    }
                )
    return rows
