"""dermai.ui.widget_state: uploads, widgets and editor rows kept across pages."""

from __future__ import annotations

from dermai.ui import widget_state


def test_kept_uploads_return_after_another_page_until_cleared() -> None:
    state: dict = {}
    first = [("a.jpg", b"1"), ("b.jpg", b"2")]
    assert widget_state.uploads_to_show(state, [], reopened=True) == []  # first visit: nothing kept yet
    assert widget_state.uploads_to_show(state, first, reopened=False) == first
    assert widget_state.uploads_to_show(state, [], reopened=True) == first  # back from another page
    assert state[widget_state.SHOWING_KEPT] is True
    assert widget_state.uploads_to_show(state, [], reopened=False) == first  # later reruns keep showing them
    widget_state.forget_uploads(state)
    assert widget_state.uploads_to_show(state, [], reopened=False) == []
    assert widget_state.uploads_to_show(state, [], reopened=True) == []  # cleared for good
    widget_state.uploads_to_show(state, first, reopened=False)
    assert widget_state.uploads_to_show(state, [], reopened=False) == []  # emptied on the page: forgotten
    assert widget_state.uploads_to_show(state, [], reopened=True) == []
    second = [("c.jpg", b"3")]
    widget_state.uploads_to_show(state, first, reopened=False)
    assert widget_state.uploads_to_show(state, second, reopened=False) == second  # a new upload replaces them
    assert widget_state.uploads_to_show(state, [], reopened=True) == second


def test_kept_camera_shot_returns_after_another_page_apart_from_the_uploads() -> None:
    state: dict = {}
    uploads, shot = [("a.jpg", b"1")], [("camera.jpg", b"2")]
    widget_state.uploads_to_show(state, uploads, reopened=False)
    assert widget_state.uploads_to_show(state, shot, reopened=False, slot=widget_state.CAMERA) == shot
    assert widget_state.uploads_to_show(state, [], reopened=True, slot=widget_state.CAMERA) == shot  # back again
    assert state[widget_state.CAMERA[1]] is True
    assert widget_state.uploads_to_show(state, [], reopened=True) == uploads  # each source keeps its own
    widget_state.forget_uploads(state, widget_state.CAMERA)
    assert widget_state.uploads_to_show(state, [], reopened=True, slot=widget_state.CAMERA) == []
    assert widget_state.uploads_to_show(state, [], reopened=True) == uploads  # clearing the photo keeps uploads


def test_widget_values_are_kept_and_restored_when_still_valid() -> None:
    state: dict = {"pred_age": 70, "pred_site": "face"}
    widget_state.keep_widgets(state, ["pred_age", "pred_sex", "pred_site"])
    fresh: dict = {widget_state.KEPT_WIDGETS: state[widget_state.KEPT_WIDGETS]}  # the widgets' own keys are gone
    widget_state.restore_widgets(fresh, {"pred_age": None, "pred_sex": ["not given"], "pred_site": ["back"]})
    assert fresh["pred_age"] == 70 and "pred_sex" not in fresh and "pred_site" not in fresh  # face: not offered
    fresh["pred_age"] = 40
    widget_state.restore_widgets(fresh, {"pred_age": None})
    assert fresh["pred_age"] == 40  # a widget that has a value keeps it


def test_data_editor_rows_come_back_after_another_page() -> None:
    state: dict = {}
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # first draw
    state["sites_ab"] = {"edited_rows": {1: {"site": "face"}}}  # the editor's own (widget) state
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # edits apply to these
    widget_state.keep_rows(state, "sites_ab", [None, "face"])
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # still, while it has state
    del state["sites_ab"]  # another page was shown
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, "face"]
    state["sites_ab"] = {"edited_rows": {0: {"site": "back"}}}
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, "face"]  # the edit's rows
    widget_state.keep_rows(state, "sites_ab", ["back", "face"])
    assert widget_state.editor_rows(state, "sites_abc", ["ear"] * 3) == ["ear"] * 3  # other images: fresh rows
    assert list(state[widget_state.KEPT_ROWS]) == ["sites_abc"]  # only the last editor's rows are kept


def test_dataset_filters_come_back_less_what_the_folder_no_longer_offers() -> None:
    state: dict = {}
    state["ds_dx"], state["ds_age"] = ["mel", "df"], (30, 60)
    widget_state.keep_widgets(state, ["ds_dx", "ds_age"])
    del state["ds_dx"], state["ds_age"]  # another page was shown: Streamlit dropped both
    widget_state.restore_choices(state, {"ds_dx": ["bcc", "mel", "nv"]})  # a folder without df
    assert state["ds_dx"] == ["mel"]
    assert widget_state.restore_range(state, "ds_age", 40, 85) == (40, 60)  # clipped to this folder's ages
    state["ds_age"] = (90, 95)
    assert widget_state.restore_range(state, "ds_age", 0, 85) == (85, 85)
    assert widget_state.restore_range({}, "ds_age", 0, 85) == (0, 85)  # nothing kept: the whole span
