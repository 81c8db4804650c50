"""The command line from any folder: `make setup` installs the package in editable mode, so `python -m dermai`
and the `dermai` script both run outside the repository (they failed with "No module named dermai" before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _outside_env() -> dict[str, str]:
    """The environment minus anything that would put the repository on the import path by hand."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DERMAI_RUNS")}


def test_python_m_dermai_runs_from_another_folder(tmp_path: Path) -> None:
    runs = tmp_path / "my runs"
    done = subprocess.run(
        [sys.executable, "-m", "dermai", "runs", "--runs", str(runs)],
        cwd=tmp_path,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"no runs folder at {runs} yet: 0 runs"


def test_the_dermai_script_is_installed_beside_python(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dermai"
    done = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "dermoscopy triage workbench" in done.stdout
