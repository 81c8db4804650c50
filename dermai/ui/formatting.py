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
# Where GFM would start a link in plain text: "www." (www.x.com), "http://" or "https://" (a path's http://x), and an
# e-mail's "@" after its name (a@b.com; "mailto:" and "xmpp:" links are e-mails too). Neither a backslash nor a
# character reference stops them: remark-gfm finds them again in the decoded text. An empty Streamlit colour
# directive there (":gray[]", a documented colour with no text: an empty <span>) splits that text in two halves
# neither of which is a link, and adds no character: the name still reads and copies as typed. Never at a line's
# start (one is always after "www", "http" or a name's character) nor straight after a ":" (a directive is not
# read there).
AUTOLINK_START = re.compile(r"(?<=www)(?=\.)|(?<=http)(?=s?(?::|&#58;)//)|(?<=[-.+\w])(?=@)", re.IGNORECASE)
AUTOLINK_BREAK = ":gray[]"


def markdown_plain(text: str) -> str:
    """`text` shown as itself in Streamlit markdown: a file name such as "__scan__.jpg", "$5 lesion.png" or
    "[x](javascript:…)" read as bold, a formula or a link, "a :red[b].jpg" lost its ":red", and "www.x.com.jpg" or
    "report@clinic.org.png" became a link. Each character markdown would act on is escaped, each colon that opens a
    Streamlit shortcode written as a character reference, each place a link would start split by an empty directive,
    and line breaks become spaces (a name after them could start a heading or a list): one name, one line."""
    one_line = " ".join(text.splitlines())
    escaped = MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), one_line)
    escaped = SHORTCODE_COLON.sub(COLON_REFERENCE, escaped)  # after the escapes: its "&" is markup, not text
    escaped = AUTOLINK_START.sub(AUTOLINK_BREAK, escaped)  # after both: its ":" and "[" are markup, not text
    return MARKDOWN_LINE_START.sub(lambda m: m.group(0) + "\\", escaped)  # "1. x" → "1\. x"


def code_span(text: str) -> str:
    """`text` (a path the user typed or chose) as a markdown code span that shows it whole: a fence of one more
    backtick than its longest run of them (CommonMark), padded with a space where it starts or ends with one, so
    a folder named "scan`s" does not end the span early and spill the rest as markdown."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
