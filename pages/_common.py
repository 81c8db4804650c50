"""What every page shares: the session's settings, cached loaders and plain error messages (not a page)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from dermai import jobs
from dermai.data import Dataset
from dermai.splits import summary_table
from dermai.ui import dataset_view, formatting, image_display, sidebar_state, weights_menu
from dermai.weights import read_meta

T = TypeVar("T")


def _leave_folder_mode() -> None:
    """Streamlit treats a `pages/` folder beside the entry script as its old folder-based navigation until some
    session runs st.navigation; a page opened directly on a fresh server would then run alone, without the
    entry script's navigation and sidebar. Switch that mode off and rerun so streamlit_app.py routes the page."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # internal module moved: keep Streamlit's default behaviour
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_folder_mode()
PLAIN_ERRORS = (ValueError, OSError, RuntimeError)  # DataError, WeightsError, IntakeError, JobError, …


@contextlib.contextmanager
def plain_errors(what: str, wording: Callable[[str], str] = str) -> Iterator[None]:
    """Show an error raised inside the block as one st.error line, never a traceback; `wording` rewrites
    its message for the page (e.g. `training_form.in_form_words`: field names as the form labels them)."""
    try:
        yield
    except PLAIN_ERRORS as exc:
        st.error(f"{what}: {formatting.markdown_plain(wording(str(exc)))}")


def or_stop(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), or a plain st.error and the end of the page when it fails."""
    try:
        return fn(*args, **kwargs)
    except PLAIN_ERRORS as exc:
        st.error(f"{what}: {formatting.markdown_plain(str(exc))}")
        st.stop()
        raise  # unreachable: st.stop() raises


def data_dir() -> str:
    """The session's data folder ("" when none was found)."""
    return sidebar_state.data_dir(st.session_state)


def weights_path() -> str:
    """The session's weights file; chosen weights whose file has gone are dropped first, so the page uses the
    default ones (`warn_if_weights_gone` says so) rather than failing on a missing file."""
    sidebar_state.forget_missing_weights(st.session_state)
    return sidebar_state.weights_path(st.session_state)


def warn_if_weights_gone() -> None:
    """A warning naming the chosen weights that were deleted or removed, while the default ones stand in: a
    clinician must not read another model's tier as that run's."""
    if notice := sidebar_state.gone_weights_notice(st.session_state, jobs.runs_dir()):
        st.warning(notice)


OTHER_WEIGHTS_ERROR = "_other_weights_error"  # why the path typed under "Other weights file" was not used


def set_weights(path: str) -> None:
    """Make `path` the session's weights (the sidebar follows on the next run); an error about a typed path
    refers to weights no longer in question, so it goes."""
    st.session_state[sidebar_state.WEIGHTS_KEY] = path
    st.session_state.pop(OTHER_WEIGHTS_ERROR, None)
    st.session_state.pop(sidebar_state.GONE_WEIGHTS_KEY, None)  # a choice made since: nothing to warn about


def require_data() -> str:
    """The data folder, or stop the page with a plain message when there is none."""
    root = data_dir()
    if not root:
        st.error("No data folder found. Enter one in the sidebar (or set DERMAI_DATA).")
        st.stop()
    return root


def dataset(root: str) -> Dataset:
    """The folder's dataset with the default split, read again only when its metadata CSV changes."""
    return _dataset(root, metadata_stamp(root))


def folder_summary(root: str) -> pd.DataFrame:
    """The folder's images per class and split (`summary_table`), counted again only when its metadata CSV changes:
    the Dataset browser shows it under every filter."""
    return _summary(root, metadata_stamp(root))


@st.cache_data(show_spinner=False, max_entries=4)
def _summary(root: str, stamp: tuple[str, int] | None) -> pd.DataFrame:
    """summary_table of `_dataset(root, stamp)`, cached per folder and CSV version."""
    return summary_table(_dataset(root, stamp))


@st.cache_data(show_spinner=False, max_entries=8, ttl=30)
def _metadata_csv(root: str, stamp: int) -> str | None:
    """Where the folder's metadata CSV is (sidebar_state.metadata_stamp), cached: finding it lists the whole folder
    (about 0.4 s for HAM10000), too slow for every rerun of the data pages. `stamp` (the folder's mtime: a CSV added,
    renamed or removed at its top) and a 30 s lifetime (one changed deeper down) let a changed folder be seen."""
    found = sidebar_state.metadata_stamp(root)
    return found[0] if found else None


def metadata_stamp(root: str) -> tuple[str, int] | None:
    """sidebar_state.metadata_stamp with the CSV's place cached (`_metadata_csv`) but its mtime read on every run,
    so an edited CSV is read again at once; a CSV gone from its cached place is searched for afresh."""
    try:
        folder = os.stat(root).st_mtime_ns
    except OSError:
        folder = -1
    csv = _metadata_csv(root, folder)
    if csv is None:
        return None
    try:
        return csv, os.stat(csv).st_mtime_ns
    except OSError:
        return sidebar_state.metadata_stamp(root)


@st.cache_data(show_spinner="Reading the data folder…", max_entries=4)
def _dataset(root: str, stamp: tuple[str, int] | None) -> Dataset:
    """browse_dataset, cached per folder and CSV version (`stamp`: the CSV's path and mtime)."""
    return dataset_view.browse_dataset(root)


@st.cache_data(show_spinner=False, max_entries=8, ttl=30)
def _folder_problem(root: str, stamp: int) -> str | None:
    """sidebar_state.data_folder_problem, cached: finding the metadata CSV lists the whole folder (about 0.4 s for
    HAM10000), too slow for the sidebar on every run. `stamp` (the folder's mtime) and a 30 s lifetime let a
    fixed folder be seen again."""
    return sidebar_state.data_folder_problem(root)


def data_folder_problem(root: str) -> str | None:
    """Why the data folder `root` cannot be read, or None (checked at most every 30 s per folder version)."""
    try:
        stamp = os.stat(root).st_mtime_ns
    except OSError:
        stamp = -1
    return _folder_problem(root, stamp)


@st.cache_data(max_entries=64)
def weights_meta(path: str, mtime: tuple[int, int]) -> dict[str, Any]:
    """The JSON beside a weights file (mtime in the key: re-saved weights are re-read); room for every run's of
    a busy runs folder, which the Weights lists read (`cached_meta`)."""
    return read_meta(path)


def cached_meta(path: str) -> dict[str, Any]:
    """A weights file's JSON through `weights_meta`'s cache: what the Weights lists (`weights_menu.weight_choices`,
    `same_split_choices`) read, so each run's JSON is read once, not once per list and per rerun."""
    return weights_meta(path, sidebar_state.weights_mtime(path))


def current_meta() -> dict[str, Any]:
    """The session's weights' JSON (raises WeightsError when missing)."""
    path = weights_path()
    return weights_meta(path, sidebar_state.weights_mtime(path))


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def predictor(path: str, mtime: tuple[int, int]) -> tuple[Any, threading.Lock]:
    """One Predictor per weights file for all sessions, with a lock so saliency hooks never interleave."""
    from dermai.predict import Predictor

    return Predictor.from_weights(path), threading.Lock()


def describe_chart(where: Any, text: str) -> None:
    """A chart's text alternative (WCAG 1.1.1) as the caption under it, on every page alike: a screen reader gets
    what the lines and bars show, not only the title. Literal text: run and class names in it are typed ones."""
    where.caption(formatting.markdown_plain(text))


def show_images(where: Any, paths: list[str], captions: list[str], width: int | str = "stretch") -> None:
    """Image files of the data folder at `where` (st or a column), decoded as training reads them
    (`image_display.gallery_image`); each file that cannot be read is an st.error naming it, so a corrupt file in
    the folder never ends the page. Each image's alt text (a caption never becomes it) names it."""
    shown: list[Any] = []
    texts: list[str] = []
    for path, text in zip(paths, captions, strict=True):
        try:
            shown.append(image_display.gallery_image(path))
            texts.append(text)
        except PLAIN_ERRORS as exc:
            where.error(str(exc))
    if shown:
        where.image(shown, caption=texts, width=width, alt=[f"Dermoscopy image {text}" for text in texts])


def sidebar() -> None:
    """Data folder and weights pickers; the values live in st.session_state for every page."""
    state = st.session_state
    sidebar_state.forget_missing_weights(state)  # before the Weights list offers them: the pages say they went
    state.setdefault(sidebar_state.DATA_KEY, sidebar_state.default_data_dir())
    state.setdefault(sidebar_state.WEIGHTS_KEY, sidebar_state.default_weights())
    # Widgets have their own keys; callbacks copy them into the settings, which pages may also change.
    for widget, key in (("_data_widget", sidebar_state.DATA_KEY), ("_weights_widget", sidebar_state.WEIGHTS_KEY)):
        if state.get(widget) != state[key]:
            state[widget] = state[key]

    def copy(widget: str, key: str) -> None:
        if key == sidebar_state.WEIGHTS_KEY:
            set_weights(state[widget])  # weights picked from the list: a typed path's error no longer applies
        else:
            state[key] = state[widget]

    def use_other() -> None:
        state.pop(OTHER_WEIGHTS_ERROR, None)
        if state["_other_weights"].strip():
            try:
                set_weights(sidebar_state.typed_weights(state["_other_weights"]))
            except PLAIN_ERRORS as exc:  # WeightsError, or an OSError from a folder it cannot list
                state[OTHER_WEIGHTS_ERROR] = f"Not used: {exc}"

    with st.sidebar:
        st.text_input(
            "Data folder",
            key="_data_widget",
            on_change=copy,
            args=("_data_widget", sidebar_state.DATA_KEY),
            help="A folder of dermoscopy images with one metadata CSV (HAM10000 layout).",
        )
        folder = sidebar_state.data_dir(state)
        if not folder:
            st.warning("No data folder found: enter one above.")
        elif problem := data_folder_problem(folder):  # a typo, said here rather than only on the data pages
            st.warning(f"{formatting.markdown_plain(problem)}: enter another folder above.")
        elif not state[sidebar_state.DATA_KEY]:  # cleared: every page falls back to the default folder
            st.caption(f"Empty: the default folder is used, {formatting.markdown_plain(folder)}")
        choices = weights_menu.weight_choices(jobs.runs_dir(), state[sidebar_state.WEIGHTS_KEY], cached_meta)
        st.selectbox(
            "Weights",
            list(choices),
            key="_weights_widget",
            format_func=lambda p: choices.get(p, p),
            on_change=copy,
            args=("_weights_widget", sidebar_state.WEIGHTS_KEY),
            help="The shipped model (weights/model.safetensors) or any training run's model.safetensors in the runs "
            "folder.",
        )
        st.text_input(
            "Other weights file",
            key="_other_weights",
            placeholder="/path/to/model.safetensors",
            on_change=use_other,
        )
        if state.get(OTHER_WEIGHTS_ERROR):
            st.error(formatting.markdown_plain(state[OTHER_WEIGHTS_ERROR]))
        st.caption(f"Runs folder: {formatting.code_span(str(jobs.runs_dir()))}")
        st.caption("A research and triage aid, not a diagnosis.")
