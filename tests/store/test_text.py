"""The one sanitiser of attacker-controlled text, in each output's mode, and the outputs that use it."""

from __future__ import annotations

from trailguard.detect.event import short
from trailguard.quality import results
from trailguard.report.daily import clean_text
from trailguard.store.text import TRUNCATED, sanitise

HOSTILE = "evil\r\nFORGED line\x1b[31m\u202eexe.txt\u2028end\x85"


def test_remove_mode_drops_control_invisible_and_bidi_characters() -> None:
    assert sanitise(HOSTILE) == "evil FORGED line [31m exe.txt end"
    assert sanitise("  \x00a\tb\x00  ") == "a b"


def test_remove_controls_mode_keeps_other_characters() -> None:
    # bidi and separators stay; NEL (\x85) is whitespace to str.strip, so the end goes
    assert sanitise(HOSTILE, unsafe="remove_controls") == "evil FORGED line [31m\u202eexe.txt\u2028end"


def test_escape_mode_shows_what_is_there() -> None:
    assert sanitise("a\x1bb") == "a b" and sanitise("a\x1bb", unsafe="escape") == "a\\x1bb"
    assert sanitise("plain é", unsafe="escape") == "plain é"  # printable text is left alone


def test_keep_mode_only_cuts() -> None:
    assert sanitise("a\nb" * 10, 5, unsafe="keep") == "a\nba\n" + TRUNCATED


def test_limits_and_markers() -> None:
    assert sanitise("x" * 10, 4) == "xxxx" + TRUNCATED
    assert sanitise("x" * 10, 4, marker="…", marker_within_limit=True) == "xxx…"
    assert sanitise("x" * 4, 4) == "xxxx"
    huge = "y" * 5_000_000
    assert sanitise(huge, 10) == "y" * 10 + TRUNCATED  # only 4 * limit characters are looked at


def test_every_output_goes_through_it() -> None:
    """Each output keeps its own conventions (missing values, markers), the characters are the sanitiser's."""
    assert short(HOSTILE, 20) == sanitise(
        HOSTILE, 20, unsafe="remove_controls", marker="…", marker_within_limit=True, scan=21
    )
    assert short(None) == "?" and clean_text(None) == ""
    assert clean_text(HOSTILE, 300) == sanitise(HOSTILE, 300)
    assert results._clip("z" * 100) == "z" * results.SAMPLE_CHARS + "…"
    assert results._printable("bad\nline") == "bad\\nline"
