"""A threat list's date (its file's last change) travels with it, so reasons can say how old it is."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from trailguard.intel.reputation import load_list, parse_list


def test_a_list_file_gives_its_date(tmp_path):
    path = tmp_path / "feed.txt"
    path.write_text("198.51.100.0/24\n")
    moment = datetime(2026, 11, 30, 12, tzinfo=timezone.utc).timestamp()
    os.utime(path, (moment, moment))
    threat = load_list(f"vendor={path}")
    assert (threat.name, threat.updated, threat.entries) == ("vendor", "2026-11-30", 1)
    assert threat.match("198.51.100.9") == ""


def test_a_list_from_bytes_has_no_date_unless_given():
    assert parse_list("x", b"192.0.2.1\n").updated == ""
    assert parse_list("x", b"192.0.2.1\n", updated="2026-01-02").updated == "2026-01-02"
