"""Median render times of the app's pages through streamlit.testing (AppTest), as a clinician clicking through them.

    python bench/page_render.py [--weights W] [--data DIR] [--repeats 3] [--runs DIR | --synthetic-runs N]

Each page is opened as tests/test_app_pages.py opens it (the page script alone, settings through DERMAI_DATA,
DERMAI_WEIGHTS and DERMAI_RUNS). "first": the page's first render on a fresh server (every st.cache_data,
st.cache_resource and dermai.file_cache cleared first); for Predict, opening it and uploading one real image
(predict + Grad-CAM). "warm rerun": the rerun after one cheap widget changed (named in the line), as Streamlit
reruns the whole script on every click. The "sidebar" line is streamlit_app.py's sidebar and Home page, rerun. Every
page is rendered once untimed first, so imports (torch, plotly) are not counted. Pressing Evaluate or Compute map is
not timed: those results are cached per setting (pages/evaluation.py). With runs (--runs, or --synthetic-runs N: N
run folders of real runs' record shapes built by bench/synthetic_runs.py in a temporary folder), the "list_runs"
line times the Runs table's listing alone: "first" with no file parsed yet (`dermai.file_cache` cleared), "again"
the next listing, as each click on the Training page lists the runs again.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.synthetic_runs import build_runs  # noqa: E402
from dermai.run_table import list_runs  # noqa: E402
from dermai.weights import DEFAULT_WEIGHTS, WeightsError, resolve_weights_path  # noqa: E402

try:
    from dermai.file_cache import clear as forget_parsed_files
except ImportError:  # this script run in a checkout from before dermai.file_cache, to measure "before"

    def forget_parsed_files() -> None:
        """Nothing is kept between listings there."""


TIMEOUT = 600
IMAGE = "ISIC_0024306.jpg"  # the image Predict is given (the pages' tests use it too)

Step = Callable[[AppTest], object]


def page(name: str) -> AppTest:
    """The page script alone, as tests/test_app_pages.py runs it."""
    if name == "sidebar":
        return AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    return AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=TIMEOUT)


def upload(image: Path) -> Step:
    """Open Predict, then give its uploader one image: the page's work starts with an image."""

    def step(at: AppTest) -> None:
        at.run()
        at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
        at.run()

    return step


def second_option(kind: str, key: str) -> Step:
    """Choose the second option of the selectbox or radio `key` and rerun."""
    return lambda at: getattr(at, kind)(key=key).set_value(getattr(at, kind)(key=key).options[1]).run()


def scenarios(data: Path) -> dict[str, tuple[Step, str, Step]]:
    """Page → (first render, the widget changed, warm rerun)."""
    plain_run: Step = lambda at: at.run()  # noqa: E731
    return {
        "sidebar": (plain_run, "rerun", plain_run),
        "home": (plain_run, "rerun", plain_run),
        "dataset": (plain_run, "image in detail", second_option("selectbox", "ds_detail")),
        "augmentation": (plain_run, "SimCLR preset", lambda at: at.toggle(key="aug_simclr").set_value(True).run()),
        "training": (plain_run, "run name", lambda at: at.text_input(key="train_run_name").input("bench").run()),
        "predict": (
            upload(data / "images" / IMAGE),
            "overlay opacity",
            lambda at: at.slider(key="pred_opacity").set_value(0.6).run(),
        ),
        "evaluation": (plain_run, "map images", lambda at: at.number_input(key="eval_limit").set_value(300).run()),
    }


def timed(step: Step, at: AppTest) -> float:
    """Milliseconds `step` took; an exception on the page is an error, not a figure."""
    start = time.perf_counter()
    step(at)
    ms = (time.perf_counter() - start) * 1000.0
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].value}")
    return ms


def measure(name: str, first: Step, warm: Step, repeats: int) -> tuple[float, float]:
    """Median first-render and warm-rerun milliseconds over `repeats` fresh sessions on a fresh server."""
    firsts, warms = [], []
    for _ in range(repeats):
        st.cache_data.clear()
        st.cache_resource.clear()
        forget_parsed_files()  # a fresh server has parsed no run's files either
        at = page(name)
        firsts.append(timed(first, at))
        warms.append(timed(warm, at))
    return statistics.median(firsts), statistics.median(warms)


def listing_ms(runs: Path, repeats: int) -> tuple[float, float]:
    """Median milliseconds of `list_runs` with no file parsed yet, and of the listing after it."""
    firsts, agains = [], []
    for _ in range(repeats):
        forget_parsed_files()
        for times in (firsts, agains):
            start = time.perf_counter()
            list_runs(runs)
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(firsts), statistics.median(agains)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="weights file or folder (default: the shipped weights/model.safetensors)")
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "ham10000"),
        help="HAM10000 copy the pages read (default: ../shared/data/ham10000 beside the project)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh sessions per page; the median is shown")
    runs_from = parser.add_mutually_exclusive_group()
    runs_from.add_argument(
        "--runs", help="runs folder the Training page and weights lists read (default: an empty one)"
    )
    runs_from.add_argument(
        "--synthetic-runs",
        type=int,
        metavar="N",
        help="build N run folders (bench/synthetic_runs.py: finished, stopped, interrupted, failed) and read them",
    )
    parser.add_argument("--pages", nargs="+", help="only these pages (sidebar home dataset augmentation …)")
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "images" / IMAGE).is_file():
        parser.error(f"--data {data}: no images/{IMAGE} there (a HAM10000 copy is needed)")
    try:
        weights = resolve_weights_path(args.weights or DEFAULT_WEIGHTS)
    except WeightsError as exc:
        parser.error(str(exc))
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    chosen = scenarios(data)
    unknown = sorted(set(args.pages or []) - set(chosen))
    if unknown:
        parser.error(f"--pages: no page {', '.join(unknown)} (choose from {', '.join(chosen)})")

    if args.synthetic_runs is not None and args.synthetic_runs < 1:
        parser.error("--synthetic-runs must be at least 1")
    runs = args.runs or tempfile.mkdtemp(prefix="dermai-bench-runs-")
    if args.synthetic_runs:
        build_runs(runs, args.synthetic_runs)
    os.environ.update(DERMAI_DATA=str(data), DERMAI_WEIGHTS=str(weights), DERMAI_RUNS=str(runs))
    os.chdir(REPO)  # `from pages._common import …`, as under `streamlit run`
    logging.disable(logging.WARNING)  # AppTest outside a server warns on every cache clear and run
    names = args.pages or list(chosen)
    for name in names:  # imports and first-use costs, not counted
        timed(chosen[name][0], page(name))

    print(f"weights {weights}, data {data}, runs {runs}, median of {args.repeats}")
    count = sum(1 for _ in Path(runs).glob("[!.]*"))
    if count:
        first_ms, again_ms = listing_ms(Path(runs), args.repeats)
        print(f"  list_runs over {count} run folders: first {first_ms:.0f} ms, again {again_ms:.0f} ms")
    print(f"  {'page':<13} {'first ms':>9} {'warm rerun ms':>14}  (widget changed)")
    for name in names:
        first, widget, warm = chosen[name]
        first_ms, warm_ms = measure(name, first, warm, args.repeats)
        print(f"  {name:<13} {first_ms:9.0f} {warm_ms:14.0f}  ({widget})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
