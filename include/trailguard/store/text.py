"""Text from the input, made safe to print to a terminal or a log line.

File names and field values are attacker-controlled: an ANSI escape sequence in a file name would clear
the screen or set the terminal's title, a newline would forge a log line, a bidirectional override would
make a name read backwards. :func:`printable` writes such characters out as visible escapes.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls but tab, DEL and C1 controls, the invisible bidirectional formatting characters, and lone
# surrogates (a file name that is not UTF-8, as the OS hands it over: printing one would raise)
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``value`` as text with control and direction-changing characters shown as ``\\xNN`` / ``\\uNNNN``."""
    text = value if isinstance(value, str) else str(value)
    return text if text.isprintable() else _UNPRINTABLE.sub(_escape, text)
