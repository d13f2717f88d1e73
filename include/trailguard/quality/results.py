"""What a validation run says: one record per expectation, the day's result, and how a verdict reads.

Samples and details hold attacker-controlled values: they are clipped here, and a summary line escapes
control characters (the page escapes everything through its template).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from trailguard.quality.expectations import CRITICAL, MISSING, QUARANTINING, TABLE_LEVEL
from trailguard.store.fs import DataPath
from trailguard.store.text import sanitise

PASSED, WARNED, FAILED = "passed", "warning", "failed"
SAMPLE_VALUES = 5
SAMPLE_CHARS = 80


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict on one partition, as stored in result.json and shown in the page."""

    name: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    unexpected_percent: float
    sample: list[str]
    detail: str

    def summary_line(self) -> str:
        verdict = verdict_of(self.name, self.success, self.severity).upper()
        column = f" [{self.column}]" if self.column else ""
        counts = (
            ""
            if self.name in TABLE_LEVEL
            else f" {self.unexpected_count} unexpected ({self.unexpected_percent:.2f}%)"
        )
        sample = f" sample={self.sample!r}" if self.sample and self.name not in TABLE_LEVEL else ""
        return f"{verdict} {self.severity:<8} {self.name}{column}:{counts}{sample} {_printable(self.detail)}"


@dataclass(frozen=True)
class QualityResult:
    """The outcome of validating one day; ``status`` is authoritative (``passed`` | ``warning`` | ``failed``)."""

    date: str
    status: str
    rows_in: int
    rows_passed: int
    rows_quarantined: int
    outcomes: list[ExpectationOutcome]
    result_path: DataPath
    html_path: DataPath
    seconds: float
    run_id: str = ""
    quarantine_path: DataPath | None = None  # the file this run wrote, if it moved any row

    @property
    def critical_failed(self) -> bool:
        """True when scoring must not use this day (schema broken, no events, nothing left)."""
        return self.status == FAILED

    def headline(self) -> str:
        return (
            f"data quality {self.date}: {self.status.upper()} rows_in={self.rows_in} passed={self.rows_passed} "
            f"quarantined={self.rows_quarantined} ({self.seconds:.2f}s) page={self.html_path}"
        )

    def summary_lines(self) -> list[str]:
        """The headline, then one line per expectation (values repr'd: they may hold control characters)."""
        return [self.headline(), *(o.summary_line() for o in self.outcomes)]


def status_of(outcomes: list[ExpectationOutcome], rows_quarantined: int) -> str:
    """Failed when a critical expectation fails that quarantine cannot repair; row-level ones are repaired."""
    if any(o.severity == CRITICAL and not o.success and o.name not in QUARANTINING for o in outcomes):
        return FAILED
    if rows_quarantined or any(not o.success for o in outcomes):
        return WARNED
    return PASSED


def verdict_of(name: str, success: bool, severity: str) -> str:
    """ok | failed | quarantined (a critical row-level failure the quarantine repaired) | warning."""
    if success:
        return "ok"
    if severity == CRITICAL:
        return "quarantined" if name in QUARANTINING else "failed"
    return "warning"


def replaced(outcome: ExpectationOutcome, **changes: Any) -> ExpectationOutcome:
    return ExpectationOutcome(**{**asdict(outcome), **changes})


def _clip(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return sanitise(text, SAMPLE_CHARS, unsafe="keep", marker="…")


def _clip_all(values: list[Any]) -> list[str]:
    return [_clip(v) for v in values[:SAMPLE_VALUES]]


def _distinct_sample(values: list[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(_clip(MISSING if value is None else value), None)
        if len(seen) == SAMPLE_VALUES:
            break
    return list(seen)


def _printable(text: str) -> str:
    return sanitise(text, unsafe="escape")
