"""Widget values kept across pages: Streamlit drops a widget's state when its page is left, so these keep and
restore them (uploads, choices, ranges, edited rows) in session state, with the keys that carry the
Augmentation lab's settings to the Training page.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

# The Augmentation lab's settings sent to the Training page, as `--augment` KEY=VALUE items per pipeline.
TRAIN_AUGMENT_KEYS = {"paper": "train_augment", "simclr": "train_simclr_augment"}

# Streamlit forgets a keyed widget's value (an uploader's files, a camera shot, a data editor's edits too) when a
# run does not draw it, i.e. as soon as the clinician opens another page. Predict keeps its uploads, camera shot,
# per-image body sites and settings under these plain keys, in the session's memory only, and offers them again
# on return.
KEPT_UPLOADS = "pred_kept_uploads"  # [(name, bytes), …] of the last upload
SHOWING_KEPT = "pred_showing_kept"  # True while the kept uploads stand in for an empty uploader
UPLOADS = (KEPT_UPLOADS, SHOWING_KEPT)  # the uploader's slot: (kept images key, showing-them key)
CAMERA = ("pred_kept_shot", "pred_showing_shot")  # the camera's slot, kept apart so each source keeps its own
KEPT_WIDGETS = "pred_kept_widgets"  # widget key → last value
KEPT_ROWS = "pred_kept_rows"  # {data editor key: (rows it started from, rows it last showed)}, the last editor only


def uploads_to_show(
    state: MutableMapping[str, Any],
    uploaded: list[tuple[str, bytes]],
    reopened: bool,
    slot: tuple[str, str] = UPLOADS,
) -> list[tuple[str, bytes]]:
    """The (name, bytes) images Predict analyses: this run's uploads (or camera shot: `slot` CAMERA), which are
    kept; else, when the page was just reopened (`reopened`: the widget had no state yet), those kept from
    earlier in the session, until cleared or replaced. A widget emptied by the clinician on the page forgets
    them."""
    kept, showing = slot
    if uploaded:
        state[kept], state[showing] = list(uploaded), False
        return list(uploaded)
    if reopened and state.get(kept):
        state[showing] = True
    if state.get(showing):
        return list(state[kept])
    state.pop(kept, None)
    return []


def forget_uploads(state: MutableMapping[str, Any], slot: tuple[str, str] = UPLOADS) -> None:
    """Drop the kept uploads or camera shot (the "Clear" button)."""
    state.pop(slot[0], None)
    state[slot[1]] = False


def restore_widgets(state: MutableMapping[str, Any], options: Mapping[str, Sequence[Any] | None]) -> None:
    """Give each widget key that has no state (its page was not shown) its kept value, when that value is
    still one of its `options` (None: any value), e.g. a body site the current model still knows."""
    kept = state.get(KEPT_WIDGETS) or {}
    for key, allowed in options.items():
        if key not in state and key in kept and (allowed is None or kept[key] in allowed):
            state[key] = kept[key]


def widget_value(state: Mapping[str, Any], key: str, default: Any) -> Any:
    """The value to give a widget that must be given one (a select_slider's value makes it a range): its own,
    else the one kept before another page was shown, else `default`. Unlike `restore_widgets` this sets no
    Session State: Streamlit warns, with a stack trace in the app's log, about a widget given a value both ways."""
    return state.get(key, (state.get(KEPT_WIDGETS) or {}).get(key, default))


def restore_choices(state: MutableMapping[str, Any], options: Mapping[str, Sequence[Any]]) -> None:
    """`restore_widgets` for multiselects: the current choices, else those kept from before another page was
    shown, less any no longer offered (another data folder may lack some diagnoses or sites)."""
    kept = state.get(KEPT_WIDGETS) or {}
    for key, allowed in options.items():
        chosen = state.get(key, kept.get(key))
        if isinstance(chosen, list | tuple):
            state[key] = [value for value in chosen if value in allowed]


def restore_range(state: MutableMapping[str, Any], key: str, low: float, high: float) -> tuple[float, float]:
    """The (low, high) a range slider shows: the kept or current range clipped to the slider's bounds (they
    move with the data folder), else the whole span. Set in `state`, so the slider is given no default."""
    kept = state.get(key, (state.get(KEPT_WIDGETS) or {}).get(key))
    lo, hi = (low, high) if not isinstance(kept, list | tuple) or len(kept) != 2 else kept
    lo, hi = min(max(lo, low), high), min(max(hi, low), high)
    state[key] = (lo, hi) if lo <= hi else (low, high)
    return state[key]


def keep_widgets(state: MutableMapping[str, Any], keys: Sequence[str]) -> None:
    """Remember the current value of each widget key that has one, for `restore_widgets`."""
    state[KEPT_WIDGETS] = {**(state.get(KEPT_WIDGETS) or {}), **{k: state[k] for k in keys if k in state}}


def editor_rows(state: MutableMapping[str, Any], key: str, fresh: list[Any]) -> list[Any]:
    """The rows a keyed st.data_editor starts from: `fresh` at first; once its edits were dropped with the page
    (`key` has no state), the rows it last showed, so they come back; otherwise the same rows as the run before,
    so its edits apply to the rows they were made on."""
    start, shown = (state.get(KEPT_ROWS) or {}).get(key, (fresh, fresh))
    if key not in state:
        start = shown
    state[KEPT_ROWS] = {key: (start, shown)}
    return list(start)


def keep_rows(state: MutableMapping[str, Any], key: str, shown: list[Any]) -> None:
    """Remember the rows the editor `key` shows now (its start with the edits), for `editor_rows`."""
    start, _ = (state.get(KEPT_ROWS) or {}).get(key, (shown, shown))
    state[KEPT_ROWS] = {key: (start, list(shown))}
