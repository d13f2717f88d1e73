"""`trailguard investigate` on the Stratus Red Team detonations mixed into ordinary traffic of the same
days (the demo generator's, its own attacks taken out), as one folder of evidence in two shapes (NDJSON
and CloudTrail's S3 layout): every technique's events are among the investigation's findings, the top of
the list is attack activity and not the background, every event is scored, and the page escapes what the
records say. Ground truth comes from the fixture's provenance keys (`_technique`), used here only."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from trailguard.cli import main

from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def investigated(tmp_path_factory) -> tuple[Path, dict, dict[str, str], set[str]]:
    from trailguard.demo import generator

    name = FIXTURES / "stratus_red_team_detonations.ndjson"
    if not name.exists():
        pytest.skip(f"public CloudTrail fixtures not found at {FIXTURES}")
    raw = [json.loads(line) for line in name.read_text().splitlines() if line.strip()]
    technique = {r["eventID"]: r["_technique"] for r in raw}
    root = tmp_path_factory.mktemp("investigate")
    evidence = root / "evidence"
    evidence.mkdir()
    published = [{k: v for k, v in r.items() if not k.startswith("_")} for r in raw]
    published[0]["userAgent"] = "<script>alert(1)</script>"  # attacker-controlled text reaches the page
    (evidence / "stratus.jsonl.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, published)).encode()))

    demo = generator.generate(
        root / "demo", end=pd.Timestamp("2024-08-02").date(), days=4, events=2400, bad_files=False
    )
    attacks = set(pd.read_csv(demo.ground_truth)["eventID"])
    background: list[dict] = []
    for path in sorted((root / "demo").rglob("*.json.gz")):
        records = json.loads(gzip.decompress(path.read_bytes())).get("Records", [])  # digests have none
        background += [r for r in records if r["eventID"] not in attacks]
    (evidence / "background.json").write_text(json.dumps({"Records": background}))

    out = root / "report"
    assert main(["investigate", str(evidence), "--out", str(out)]) == 0
    document = json.loads((out / "investigation.json").read_text())
    return out, document, technique, {r["eventID"] for r in background}


def test_every_event_is_scored_and_reported(investigated):
    out, document, technique, background = investigated
    assert (out / "investigation.html").exists()
    assert document["summary"]["events"] == len(technique) + len(background)
    assert document["summary"]["events_scored"] == document["summary"]["events"]
    assert document["quality"]["days"] and all(
        d["status"] in ("passed", "warning") for d in document["quality"]["days"]
    )
    assert any(s["model_name"] == "cold-start" and "history" in s["note"] for s in document["scorers"])


def test_each_technique_is_among_the_findings(investigated):
    _, document, technique, _ = investigated
    found = {technique[f["eventID"]] for f in document["top"] if f["eventID"] in technique}
    for timeline in document["timelines"]:
        found |= {
            technique[e["eventID"]]
            for e in timeline["timeline"]
            if e["eventID"] in technique and e["risk_score"] >= 40
        }
    missing = set(technique.values()) - found
    assert not missing, f"techniques without a finding: {sorted(missing)}"


def test_the_top_is_attack_activity_not_background(investigated):
    _, document, technique, background = investigated
    top = document["top"][:25]
    assert len(top) == 25
    from_background = [f for f in top if f["eventID"] in background]
    assert not from_background, [(f["rank"], f["title"], f["reasons"]) for f in from_background]
    assert document["techniques"], "the ATT&CK techniques seen are listed"


def test_the_page_escapes_record_text(investigated):
    out, *_ = investigated
    html = (out / "investigation.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "Top findings across the period" in html and "Timelines" in html
