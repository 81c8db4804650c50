"""The benchmarks name a path they cannot use, as the CLI does, instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_missing_weights_are_a_usage_error_naming_the_path(ham_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    done = run_bench("predict_latency.py", "--weights", str(missing), "--data", str(ham_root))
    assert done.returncode == 2
    assert f"error: {missing}: weights file not found" in done.stderr and "Traceback" not in done.stderr


def test_train_throughput_names_a_missing_data_folder(tmp_path: Path) -> None:
    done = run_bench("train_throughput.py", "--data", str(tmp_path / "none"))
    assert done.returncode == 2
    assert f"no data folder found; tried: {tmp_path / 'none'}" in done.stderr and "Traceback" not in done.stderr
