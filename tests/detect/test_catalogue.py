"""The detection catalogue: every detection's own cases, its metadata, and docs/detections.md kept current."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from trailguard import cli
from trailguard.detect.catalogue import (
    REGENERATE,
    TACTICS,
    TECHNIQUE_TACTICS,
    catalogue,
    frame_rule_ids,
    network_rule_ids,
    reason_pattern,
    render_markdown,
    render_text,
    window_rule_ids,
)
from trailguard.detect.engine import FRAME_RULES, evaluate_event, frame_hits
from trailguard.detect.registry import Case, Detection
from trailguard.detect.window import WINDOW_RULES, window_hits
from trailguard.ingest import normalise

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "detections.md"
WINDOWS = window_rule_ids()
FRAMES = frame_rule_ids()
NETWORK = network_rule_ids()


@pytest.fixture(autouse=True)
def sample_threat_list(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """ip_on_threat_list's cases need a list: one naming the documentation address its firing case uses."""
    from trailguard.detect.network import LISTED_PEER
    from trailguard.detect.rules.initial_access import LISTED_SAMPLE_IP
    from trailguard.intel import reputation

    path = tmp_path_factory.mktemp("intel") / "catalogue-sample.txt"
    path.write_text(f"{LISTED_SAMPLE_IP}\n{LISTED_PEER}\n")
    monkeypatch.setenv("TRAILGUARD_THREAT_LISTS", f"catalogue-sample={path}")
    reputation.load_lists.cache_clear()
    yield
    reputation.load_lists.cache_clear()


CASES = [(d, case) for d in catalogue() for case in d.cases]


def _frame(case: Case) -> pd.DataFrame:
    """The case's records, normalised exactly as ingestion does."""
    return normalise.rows_to_table(
        [normalise.normalise(dict(r), "catalogue") for r in case.records]
    ).to_pandas()


def reasons_of(detection: Detection, case: Case) -> list[str]:
    """The reasons ``detection`` gives on the case's records (none: it stays silent)."""
    if detection.rule_id in NETWORK:  # flow records, through the flows wing's detections
        from trailguard.flows.detect import case_reasons

        return case_reasons(detection.rule_id, case.records)
    if detection.rule_id in WINDOWS:
        (rule,) = [w for w in WINDOW_RULES if detection in w.detections]
        return [reason for _, d, reason in window_hits(_frame(case), rule) if d.rule_id == detection.rule_id]
    if detection.rule_id in FRAMES:
        (frame_rule,) = [r for r in FRAME_RULES if r.detection.rule_id == detection.rule_id]
        return [reason for _, _, reason in frame_hits(_frame(case), (frame_rule,))]
    assert len(case.records) == 1, "a per-event rule's case is one record"
    row = normalise.normalise(dict(case.records[0]), "catalogue")
    return [reason for d, reason in evaluate_event(row) if d.rule_id == detection.rule_id]


@pytest.mark.parametrize(
    ("detection", "case"),
    CASES,
    ids=[f"{d.rule_id}: {'fires' if c.fires else 'near miss'}: {c.name}" for d, c in CASES],
)
def test_detection_on_its_own_case(detection: Detection, case: Case) -> None:
    reasons = reasons_of(detection, case)
    if not case.fires:
        assert not reasons, reasons
        return
    assert reasons
    for reason in reasons:
        assert "\n" not in reason and len(reason) < 400
        assert reason_pattern(detection.reason).fullmatch(reason), (detection.reason, reason)


@pytest.mark.parametrize("detection", catalogue(), ids=lambda d: d.rule_id)
def test_detection_record_is_complete(detection: Detection) -> None:
    assert {True, False} <= {case.fires for case in detection.cases}, "needs a firing case and a near miss"
    assert len({case.name for case in detection.cases}) == len(detection.cases), "case names must differ"
    assert all(case.name and case.records for case in detection.cases)
    assert re.fullmatch(r"T\d{4}(\.\d{3})?", detection.technique)
    assert 0 < detection.score <= 100 and detection.title and detection.runbook
    assert detection.reason and "\n" not in detection.reason and "\n" not in detection.runbook
    assert detection.tactic in TACTICS
    parent = detection.technique.split(".")[0]
    assert parent in TECHNIQUE_TACTICS, f"add {parent} and its tactics to TECHNIQUE_TACTICS"
    assert detection.tactic in TECHNIQUE_TACTICS[parent], (
        f"{detection.rule_id} is filed under {detection.tactic}, not a tactic of {detection.technique}"
    )


def test_catalogue_ids_are_unique() -> None:
    ids = [d.rule_id for d in catalogue()]
    assert (
        len(ids) == len(set(ids)) and len(ids) == 74 + 6 + 8 + 8 + 9
    )  # + issue 16: 8 per-event and 8 frame rules; + issue 20: 9 network detections


def test_docs_detections_md_is_current() -> None:
    assert DOCS.is_file(), f"docs/detections.md is missing: run `{REGENERATE}`"
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        f"docs/detections.md is stale: run `{REGENERATE}`"
    )


def test_rules_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rules"]) == 0
    shown = capsys.readouterr().out
    assert shown == render_text()
    assert re.search(
        r"^cloudtrail_stopped\s+defense_evasion\s+T1562\.008\s+90\s+1\+1\s+CloudTrail logging stopped$",
        shown,
        re.MULTILINE,
    )
    out = tmp_path / "detections.md"
    assert cli.main(["rules", "--format", "markdown", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_markdown()
    assert "### cloudtrail_stopped" in out.read_text(encoding="utf-8")


def test_rules_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rules", "--out", str(tmp_path / "missing" / "x.md")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as usage:
        cli.main(["rules", "--format", "html"])
    assert usage.value.code == 2


def test_readme_example_is_real_code() -> None:
    """README's "Adding a detection" shows a rule as it is in the code, not a copy that drifts."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Adding a detection", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert example in (ROOT / "include/trailguard/detect/rules/defense_evasion.py").read_text(
        encoding="utf-8"
    )
