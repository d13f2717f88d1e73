"""Compare the detections' labels on the demo with recorded ones: same rules, scores, techniques, reasons.

Why: a change to the detections that should not alter behaviour (moving rules between modules, sharing a
sanitiser) must leave every label as it was. Lighter than ``compare_demo.py`` (no Airflow, no models): it
generates the default demo logs (seed 7, 30 days) in a temporary folder, normalises every record as
ingestion does and labels them all with ``label_events``. Record once from a known-good tree, check
after the change::

    python bench/compare_labels.py record bench/demo_labels.json   # known-good tree
    python bench/compare_labels.py check  bench/demo_labels.json   # after the change: exit 1 on a difference

A change that is meant to alter labels records a new file in the same commit and says why.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path


def demo_labels() -> dict:
    """Digest, size and per-rule counts of the labels of every record of the default demo."""
    from trailguard.demo import generator
    from trailguard.detect.engine import label_events
    from trailguard.ingest import normalise

    with tempfile.TemporaryDirectory() as folder:
        generator.generate(Path(folder) / "logs")
        rows = []
        for path in sorted((Path(folder) / "logs").rglob("*.json.gz")):
            try:
                records = json.loads(gzip.decompress(path.read_bytes()))["Records"]
            except (OSError, EOFError, ValueError, KeyError, TypeError):
                continue  # the demo's deliberately broken files
            for record in records:
                try:
                    rows.append(normalise.normalise(record, path.name))
                except normalise.RecordError:
                    continue
    frame = normalise.rows_to_table(rows).to_pandas()
    labels = label_events(frame)
    digest = hashlib.sha256()
    for row in zip(frame["eventID"], *(labels[c] for c in labels.columns), strict=True):
        digest.update(json.dumps([None if v is None else str(v) for v in row]).encode())
    per_rule = Counter(r for rules in labels["lf_rules"] for r in rules.split(",") if r)
    return {
        "events": len(frame),
        "labelled": int((labels["lf_score"] > 0).sum()),
        "sha256": digest.hexdigest(),
        "per_rule": dict(sorted(per_rule.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("recorded", type=Path, help="the recorded labels summary (JSON)")
    args = parser.parse_args(argv)
    now = demo_labels()
    if args.action == "record":
        args.recorded.write_text(json.dumps(now, indent=1) + "\n", encoding="utf-8")
        print(
            f"recorded the labels of {now['events']} demo events ({now['labelled']} labelled) in {args.recorded}"
        )
        return 0
    before = json.loads(args.recorded.read_text(encoding="utf-8"))
    if now == before:
        print(f"same labels on all {now['events']} demo events ({now['labelled']} labelled)")
        return 0
    changed = sorted(
        r
        for r in set(now["per_rule"]) | set(before["per_rule"])
        if now["per_rule"].get(r) != before["per_rule"].get(r)
    )
    print(
        f"labels differ: events {before['events']} -> {now['events']}, labelled {before['labelled']} -> "
        f"{now['labelled']}; rules with other counts: {', '.join(changed) or 'none (same counts, other labels)'}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
