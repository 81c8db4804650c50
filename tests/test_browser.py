"""End to end in a real browser: `streamlit run streamlit_app.py` driven by headless Chromium through Python
Playwright. Every page loads without an exception; Predict turns an uploaded HAM10000 image into a tier and an
overlay. Screenshots go to artifacts/screenshots/ (gitignored)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HAM
from tests.test_ui_evaluation_view import tiny_weights

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "artifacts" / "screenshots"
# Dataset first: a page opened directly on a fresh server must still get the entry script's navigation and sidebar.
PAGES = {
    "dataset": "dataset",
    "home": "",
    "augmentation": "augmentation",
    "training": "training",
    "predict": "predict",
    "evaluation": "evaluation",
}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

SETTLED = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stSpinner"]')
    && !document.querySelector('[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]');
}"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless streamlit server on a free port, pointed at the data, tiny weights and an empty runs dir."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    weights = tiny_weights(tmp_path_factory.getbasetemp())
    tmp = tmp_path_factory.mktemp("browser")
    port = _free_port()
    env = {
        **os.environ,
        "DERMAI_DATA": str(HAM),
        "DERMAI_WEIGHTS": str(weights),
        "DERMAI_RUNS": str(tmp / "runs"),
        "DERMAI_CACHE": str(tmp / "cache"),
    }
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"streamlit did not start: {(tmp / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _settle(page, timeout_ms: int = 120_000) -> None:  # noqa: ANN001
    """Wait until the app has rendered and its script has stopped running."""
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_ms)
    page.wait_for_function(SETTLED, timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_function(SETTLED, timeout=timeout_ms)


def _assert_no_exception(page, name: str) -> None:  # noqa: ANN001
    text = page.inner_text("body")
    assert "Traceback" not in text, f"{name}: traceback shown"
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: exception shown"


def test_every_page_and_a_prediction(server: str) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            for name, path in PAGES.items():
                page.goto(f"{server}/{path}")
                _settle(page)
                _assert_no_exception(page, name)
                assert page.locator('[data-testid="stSidebar"]').get_by_text("Data folder").count() == 1, name
                page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

            page.goto(f"{server}/predict")
            _settle(page)
            image = HAM / "images" / "ISIC_0024306.jpg"
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(image))
            page.get_by_text("Triage tier:").wait_for(timeout=120_000)
            _settle(page)
            _assert_no_exception(page, "predict with upload")
            overlay = page.locator('[data-testid="stImage"] img').nth(1)
            overlay.wait_for(timeout=60_000)
            assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
            page.screenshot(path=str(SHOTS / "predict_result.png"), full_page=True)

            page.goto(f"{server}/predict")
            _settle(page)
            batch = [HAM / "images" / n for n in ("ISIC_0024306.jpg", "ISIC_0025964.jpg", "ISIC_0024307.jpg")]
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in batch])
            page.get_by_text("Worklist: 3 images, most urgent first").wait_for(timeout=120_000)
            page.get_by_text("Triage tier:").wait_for(timeout=120_000)  # the most urgent one, in full
            _settle(page)
            _assert_no_exception(page, "predict with a batch")
            assert page.locator('[data-testid="stDataFrame"]').count() == 1
            page.screenshot(path=str(SHOTS / "predict_worklist.png"), full_page=True)
        finally:
            browser.close()


@contextlib.contextmanager
def predict_error_for(server: str, name: str) -> Iterator[Any]:
    """Predict's error for an upload named `name` that is not an image, in a fresh Chromium page: the one
    element a name shown through `ui.formatting.markdown_plain` can be read from whole."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{server}/predict")
            _settle(page)
            upload = {"name": name, "mimeType": "image/jpeg", "buffer": b"not an image"}
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files=[upload])
            error = page.locator('[data-testid="stAlert"]').filter(has_text="Cannot analyse this file").first
            error.wait_for(timeout=120_000)
            _settle(page)
            _assert_no_exception(page, f"predict with an upload named {name!r}")
            yield error
        finally:
            browser.close()


SHORTCODE_NAME = "a :red[b] :smile: :material/home: :streamlit: $x$.jpg"  # every Streamlit shortcode, a formula


def test_an_upload_name_with_streamlit_shortcodes_reads_as_typed(server: str) -> None:
    """Streamlit reads ":red[b]", ":smile:", ":material/home:" and ":streamlit:" after markdown's escapes, so only
    the browser shows whether a name survives `ui.formatting.markdown_plain`: here, in Predict's error for a file
    it cannot read, whole, with no emoji, icon or logo in its place."""
    with predict_error_for(server, SHORTCODE_NAME) as error:
        assert f"Cannot analyse this file: {SHORTCODE_NAME}" in error.inner_text()
        assert error.locator("img, svg, [data-testid='stIconMaterial']").count() == 0


# Each thing GFM would link in plain text: a web address, an e-mail, a URL, "mailto:" and "xmpp:" e-mails
LINK_NAME = "www.evil-site.com report@clinic.org http://x.io/a mailto:a@b.com xmpp:c@d.org WWW.X.COM.jpg"


def test_an_upload_name_with_web_and_mail_addresses_reads_as_typed_and_links_nowhere(server: str) -> None:
    """remark-gfm links "www.…", "http://…" and "…@…" in the text after escapes and character references are read,
    so only the browser shows whether `ui.formatting.markdown_plain` keeps such a name plain: in Predict's error
    for a file it cannot read, whole (as read and as copied) and with no link."""
    with predict_error_for(server, LINK_NAME) as error:
        assert f"Cannot analyse this file: {LINK_NAME}" in error.inner_text()
        copied = error.evaluate(
            """el => { const range = document.createRange(); range.selectNodeContents(el);
                       getSelection().removeAllRanges(); getSelection().addRange(range);
                       return getSelection().toString(); }"""
        )
        assert f"Cannot analyse this file: {LINK_NAME}" in copied
        assert error.locator("a").count() == 0
