"""Compare a demo run's report with a recorded one: same top events (eventIDs, ranks) and the same scores.

Why: a change that should not alter behaviour (a refactor) must leave the demo's daily top 20 as it was.
Record once from a known-good run, compare after the change::

    python bench/compare_demo.py record demo/data bench/demo_top20.json   # from a known-good `make demo`
    python bench/compare_demo.py check  demo/data bench/demo_top20.json   # after the change: exit 1 on a difference

A change that is meant to alter the ranking records a new file in the same commit and says why.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

DAY = "2026-11-20"


def top_events(data_root: Path, day: str = DAY) -> list[dict[str, str]]:
    """Rank, eventID and score of each reported row, scores to 0.1 as the report prints them."""
    path = data_root / "reports" / day / "top_events.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {"rank": row["rank"], "eventID": row["eventID"], "risk_score": f"{float(row['risk_score']):.1f}"}
            for row in csv.DictReader(handle)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("data_root", type=Path, help="the demo's data root (make demo: demo/data)")
    parser.add_argument("recorded", type=Path, help="the recorded top events (JSON)")
    parser.add_argument("--date", default=DAY)
    args = parser.parse_args(argv)
    now = top_events(args.data_root, args.date)
    if args.action == "record":
        args.recorded.write_text(json.dumps({"date": args.date, "top_events": now}, indent=1) + "\n")
        print(f"recorded {len(now)} top events of {args.date} in {args.recorded}")
        return 0
    before = json.loads(args.recorded.read_text())["top_events"]
    if now == before:
        print(f"same top {len(now)} of {args.date}: eventIDs, ranks and scores")
        return 0
    for old, new in zip(before, now, strict=False):
        if old != new:
            print(
                f"rank {old['rank']}: recorded {old['eventID']} {old['risk_score']}, now {new['eventID']} {new['risk_score']}"
            )
    if len(before) != len(now):
        print(f"recorded {len(before)} rows, now {len(now)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
