"""The page-facing text helpers several views share: the table's missing-figure mark, markdown escaping of
untrusted names. Kept apart so every view can use them without importing another view.
"""

from __future__ import annotations

import re
from typing import Any

MISSING = "—"  # a table's missing figure (st.dataframe's placeholder): Streamlit's own is the word "None"


def is_number(value: Any) -> bool:
    """A JSON number (true/false are not figures)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# What markdown (with Streamlit's "$…$" formulas) acts on anywhere in a line: escaped always.
# "_" only where it can open or close emphasis (not between two letters or digits, as in ISIC_0024306), so ids and
# paths read as typed in the page's words and its tests; "&" would turn "&lt;" into "<".
MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>$~|&])|(?<![^\W_])_|_(?![^\W_])")
MARKDOWN_LINE_START = re.compile(r"^(\d+(?=[.)])|(?=[#>+=-]))")  # a heading, quote, list or rule at a line's start
# A colon that opens one of Streamlit's own shortcodes, even straight after a letter or digit: ":red[x]" (the text
# coloured, its name gone; "[" is escaped by then), ":smile:", ":+1:", ":100:" (emoji) and ":material/home:" (an
# icon). A backslash does not stop them (they are matched after markdown's escapes are read), a character reference
# does: "&#58;" shows as ":" and copies as ":". A colon that opens none ("12:30", "1:1", "C:\\") stays as typed. The
# Streamlit logo's ":streamlit:" is the exception, matched whatever its opening colon is written as: its closing
# colon is encoded.
SHORTCODE_COLON = re.compile(r":(?=[\w+\-/]+(?::|\\\[))(?!streamlit:)|(?<=:streamlit):", re.IGNORECASE)
COLON_REFERENCE = "&#58;"


def markdown_plain(text: str) -> str:
    """`text` shown as itself in Streamlit markdown: a file name such as "__scan__.jpg", "$5 lesion.png" or
    "[x](javascript:…)" read as bold, a formula or a link, and "a :red[b].jpg" lost its ":red". Each character
    markdown would act on is escaped, each colon that opens a Streamlit shortcode written as a character reference,
    and line breaks become spaces (a name after them could start a heading or a list): one name, one line."""
    one_line = " ".join(text.splitlines())
    escaped = MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), one_line)
    escaped = SHORTCODE_COLON.sub(COLON_REFERENCE, escaped)  # after the escapes: its "&" is markup, not text
    return MARKDOWN_LINE_START.sub(lambda m: m.group(0) + "\\", escaped)  # "1. x" → "1\. x"


def code_span(text: str) -> str:
    """`text` (a path the user typed or chose) as a markdown code span that shows it whole: a fence of one more
    backtick than its longest run of them (CommonMark), padded with a space where it starts or ends with one, so
    a folder named "scan`s" does not end the span early and spill the rest as markdown."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
