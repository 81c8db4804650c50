"""Names that GFM would turn into links ("www.x.com", "a@b.com", "http://x"): `markdown_plain` splits each place a
link would start with an empty ":gray[]" directive, as remark-gfm finds links in the text after escapes and
character references are decoded. The browser test (tests/test_browser.py) shows the page reads them as typed."""

from __future__ import annotations

import re

import pytest

from dermai.ui import formatting

# remark-gfm's own patterns (mdast-util-gfm-autolink-literal), which Streamlit runs on each text node.
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)
ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def text_runs(markdown: str) -> list[str]:
    """The text nodes the page's markdown holds: split at each break, escapes and colon references decoded."""
    return [ESCAPE.sub(r"\1", run).replace("&#58;", ":") for run in markdown.split(":gray[]")]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("www.evil-site.com.jpg", "www:gray[].evil-site.com.jpg"),
        ("WWW.X.COM", "WWW:gray[].X.COM"),
        ("report@clinic.org.png", "report:gray[]@clinic.org.png"),
        ("photo@2x.png", "photo:gray[]@2x.png"),
        ("/data/http://x/scans", "/data/http:gray[]://x/scans"),
        ("HTTPS://X.COM/a.jpg", "HTTP:gray[]S://X.COM/a.jpg"),
        ("mailto:a@b.com.jpg", "mailto:a:gray[]@b.com.jpg"),
        ("xmpp:a@b.com/x", "xmpp:a:gray[]@b.com/x"),
        ("a_@b.com", r"a\_:gray[]@b.com"),  # after an escape
        ("-@x.com", r"\-:gray[]@x.com"),  # a line's start still escaped, the break after it
        ("http://a:b", "http:gray[]&#58;//a:b"),  # after a shortcode's colon reference
        # nothing a link starts at: as before
        ("@x.com wwwx.com http:x ISIC_0024306.jpg", "@x.com wwwx.com http:x ISIC_0024306.jpg"),
    ],
)
def test_a_name_gfm_would_link_is_split_where_the_link_starts(text: str, shown: str) -> None:
    assert formatting.markdown_plain(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "see www.x.com, a@b.com and http://x.y",
        "https://evil.example.org/www.b.com?q=a@c.org",
        "__www.x.com__ $x$ :red[a@b.com] report@clinic.org",
        "x.y+z@mail.co.uk\nwww.second.line",
    ],
)
def test_no_text_run_of_a_hostile_name_holds_a_link_and_together_they_read_as_typed(text: str) -> None:
    runs = text_runs(formatting.markdown_plain(text))
    assert not [run for run in runs if GFM_URL.search(run) or GFM_EMAIL.search(run)], runs
    assert "".join(runs) == " ".join(text.splitlines())
