"""The sidebar's choices kept in session state: the data folder and weights in use, their defaults, stamps
that say when they changed, and the sidebar's advice. The pages lay these out; no ML logic here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from dermai.data import DataError, find_metadata_csv, resolve_data_root
from dermai.jobs import runs_dir
from dermai.weights import DEFAULT_WEIGHTS, WeightsError, read_meta, resolve_weights_path

DATA_KEY = "data_dir"  # session-state keys shared by the sidebar and the pages
WEIGHTS_KEY = "weights_path"


def default_data_dir() -> str:
    """The data folder a fresh session uses ($DERMAI_DATA, ./data/ham10000, ../shared/data/ham10000), or ""."""
    try:
        return str(resolve_data_root())
    except DataError:
        return ""


def default_weights() -> str:
    """The weights a fresh session uses: $DERMAI_WEIGHTS, else the shipped weights/model.safetensors."""
    return os.environ.get("DERMAI_WEIGHTS") or str(DEFAULT_WEIGHTS)


def data_dir(state: Mapping[str, Any]) -> str:
    """The session's data folder (possibly "" when none was found)."""
    return str(state.get(DATA_KEY) or default_data_dir())


def weights_path(state: Mapping[str, Any]) -> str:
    """The session's weights file."""
    return str(state.get(WEIGHTS_KEY) or default_weights())


GONE_WEIGHTS_KEY = "weights_gone"  # the chosen weights last dropped because their run was deleted or removed


def forget_weights_in(state: MutableMapping[str, Any], folder: str | os.PathLike[str]) -> bool:
    """Drop the session's weights choice when it lies in `folder` (a run just deleted), so every page falls back
    to the default weights instead of failing on a missing file, and remember it (`gone_weights_notice`): a
    clinician must see that another model scores now. Whether it did."""
    chosen = state.get(WEIGHTS_KEY)
    if chosen and Path(chosen).absolute().is_relative_to(Path(folder).absolute()):
        state[GONE_WEIGHTS_KEY] = state.pop(WEIGHTS_KEY)
        return True
    return False


def forget_missing_weights(state: MutableMapping[str, Any]) -> bool:
    """Drop the session's weights choice when its file has gone (its run folder removed on disk), as
    `forget_weights_in` does for a run deleted from the Training page; the default weights, when they are
    the ones missing, stay chosen (the pages then say they cannot be loaded). Whether it did."""
    chosen = state.get(WEIGHTS_KEY)
    if chosen and chosen != default_weights() and not Path(chosen).exists():
        state[GONE_WEIGHTS_KEY] = state.pop(WEIGHTS_KEY)
        return True
    return False


def gone_weights_notice(state: Mapping[str, Any], runs: str | os.PathLike[str] | None = None) -> str | None:
    """What a page says while the default weights stand in for chosen ones that have gone: which run (or file)
    is missing and which model scores now; None when nothing has gone or other weights were chosen since."""
    gone = state.get(GONE_WEIGHTS_KEY)
    default = default_weights()
    if not gone or weights_path(state) != default:
        return None
    path, root = Path(gone), runs_dir(runs)
    inside = path.absolute().is_relative_to(root.absolute())
    where = path.absolute().parent.relative_to(root.absolute()) if inside else None
    what = f"run `{where}` (`{gone}`)" if where else f"`{gone}`"
    return (
        f"**The weights chosen earlier are gone:** {what} was deleted or its folder removed. The default model, "
        f"`{default}`, is in use now; choose other weights in the sidebar."
    )


def typed_weights(text: str) -> str:
    """The weights file a typed path names (a .safetensors file, or a folder holding one) if its JSON can be
    read, else a WeightsError naming the file: checked when typed, so a mistyped path never joins the sidebar's
    list as if it were a choice, nor replaces weights that worked."""
    path = resolve_weights_path(text.strip())
    read_meta(path)
    return str(path)


def weights_mtime(path: str) -> tuple[int, int]:
    """A cache key part that changes when weights are re-saved (e.g. calibrated): the modification times of
    the .safetensors file a path (file or folder) resolves to and of its JSON; (0, 0) when missing."""
    try:
        weights = resolve_weights_path(path)
        return weights.stat().st_mtime_ns, weights.with_suffix(".json").stat().st_mtime_ns
    except (WeightsError, OSError):
        return 0, 0


def metadata_stamp(root: str | os.PathLike[str]) -> tuple[str, int] | None:
    """A cache key part that changes when a data folder's metadata CSV is edited or replaced: its path and
    modification time; None when there is none (loading the folder then says why)."""
    try:
        csv = find_metadata_csv(Path(root))
        return str(csv), csv.stat().st_mtime_ns
    except (DataError, OSError):
        return None


SIDEBAR_ADVICE = "enter another data folder in the sidebar"  # the app's advice; the CLI's is --data DIR
CLI_ADVICE = "(pass --data DIR or set DERMAI_DATA)"  # dermai.data's advice, which the app's user cannot follow


def data_folder_problem(root: str | os.PathLike[str]) -> str | None:
    """Why a data folder (as typed in the sidebar) cannot be read: it does not exist, is a file, or holds no one
    metadata CSV; None when it can. Checked when typed, so the sidebar says so before a page fails."""
    path = Path(root)
    if not path.exists():
        return f"{root}: no such folder"
    if not path.is_dir():
        return f"{root}: not a folder"
    try:
        find_metadata_csv(path)
    except DataError as exc:
        return str(exc)
    except OSError as exc:
        return f"{root}: cannot be read ({exc.strerror or exc})"
    return None


def sidebar_words(message: str) -> str:
    """A data error's message with the command line's advice ("pass --data DIR or set DERMAI_DATA") replaced by
    the app's: the data folder is set in the sidebar."""
    return message.replace(CLI_ADVICE, f"({SIDEBAR_ADVICE})")
