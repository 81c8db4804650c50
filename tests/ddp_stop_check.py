"""Run by tests/test_ddp_stop_preparing.py under torchrun (2 CPU processes, gloo): `python -m dermai` with the
given arguments, where only rank 0 sees the run's STOP file (as when it is written between two ranks' looks at
it), so the ranks stop together only if they follow rank 0's reading."""

from __future__ import annotations

import os
import sys

from dermai import cli
from dermai.train import Trainer

if __name__ == "__main__":
    if os.environ.get("RANK", "0") != "0":
        Trainer._stop_requested = lambda self: False  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
