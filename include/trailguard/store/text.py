"""Attacker-controlled text made safe to show: the one sanitiser behind every output.

Every CloudTrail field is attacker-controlled: a value may hold control characters (a forged log line, a
terminal escape), invisible or bidi characters (text that displays as something else) or megabytes. The
detection reasons, the report, the mail and the quality page all pass such values through
:func:`sanitise`; they differ only in what they do about it, and each difference is a named parameter.
"""

from __future__ import annotations

import re
from typing import Literal

TRUNCATED = "…[truncated]"  # the default marker of a value cut to its limit

CONTROLS = "\x00-\x1f\x7f"  # C0 control characters and DEL: line breaks, escapes
INVISIBLE = "\x80-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff"  # C1, separators, bidi, BOM

Unsafe = Literal["remove", "remove_controls", "escape", "keep"]
_REMOVED: dict[str, re.Pattern[str]] = {
    "remove": re.compile(f"[{CONTROLS}{INVISIBLE}]+"),
    "remove_controls": re.compile(f"[{CONTROLS}]+"),
}


def sanitise(
    text: str,
    limit: int | None = None,
    *,
    unsafe: Unsafe = "remove",
    marker: str = TRUNCATED,
    marker_within_limit: bool = False,
    scan: int | None = None,
) -> str:
    """``text`` fit to show: unsafe characters dealt with, at most ``limit`` characters plus a visible marker.

    ``unsafe``: ``"remove"`` turns each run of control, invisible and bidi characters into one space and
    strips the ends (HTML, mail, plain text); ``"remove_controls"`` does so for control characters only
    (detection reasons); ``"escape"`` shows the whole text as Python escapes when anything in it is not
    printable (log lines, where what is there matters); ``"keep"`` leaves the characters to a later
    escaping step (values the quality page HTML-escapes). A text longer than ``limit`` is cut and gets
    ``marker``, counted within the limit when ``marker_within_limit``. Only the first ``scan`` characters
    (default ``4 * limit``) are looked at: a megabyte value costs no more than a short one.
    """
    if limit is not None:
        text = text[: 4 * limit if scan is None else scan]
    if unsafe == "escape":
        text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    elif unsafe != "keep":
        text = _REMOVED[unsafe].sub(" ", text).strip()
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - len(marker) if marker_within_limit else limit] + marker
