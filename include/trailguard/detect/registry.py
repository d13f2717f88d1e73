"""The detection catalogue's records: the ``@rule`` decorator every per-event detection is declared with.

A detection keeps everything about it next to its code, as in panther-analysis: its id, title, ATT&CK
technique, score, reason template, triage line and its named test cases (records it must fire on, near
misses it must not). ``tests/detect/test_catalogue.py`` runs every rule's cases; ``trailguard rules``
lists the catalogue and writes ``docs/detections.md``.

Reason templates are the reason text a rule produces, with a ``{placeholder}`` for each part taken from
the event: ``{actor}`` is the caller (ARN, else user name or principal id, else "unknown principal"),
``{ip}`` the source IP address, ``{count}`` a number the rule counted, ``{failure}`` " (failed: <errorCode>)"
or nothing, ``{a|b}`` one of the wordings shown; any other placeholder is the event value it names (a
bucket, a trail, a role...). Interpolated values are cut to 64 characters and lose control characters; a
missing value shows as "?". The catalogue test checks every firing case's reason against the template.

Rule modules (``detect/rules/<tactic>.py``) import this; the engine imports the rule modules, so the
registry itself imports no rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trailguard.detect.event import Event

if TYPE_CHECKING:
    import pandas as pd

RuleCheck = Callable[[Event], "str | None"]
FrameCheck = Callable[["pd.DataFrame"], "Iterable[tuple[int, str]]"]


@dataclass(frozen=True)
class Case:
    """A named test of a detection: raw CloudTrail records (one for a per-event rule, a burst for a window
    rule) and whether the detection must fire on them."""

    name: str
    records: tuple[Mapping[str, Any], ...]
    fires: bool


def fires(name: str, *records: Mapping[str, Any]) -> Case:
    """A case the detection must fire on."""
    return Case(name, records, True)


def near_miss(name: str, *records: Mapping[str, Any]) -> Case:
    """A case close to firing that the detection must stay silent on."""
    return Case(name, records, False)


@dataclass(frozen=True)
class Detection:
    """Metadata of one detection: what the label means and what an analyst should do about it.

    ``tactic`` is the ATT&CK tactic the rule is filed under (its module for a per-event rule); ``reason``
    the template of its one-line reason; ``cases`` its named test cases (not part of equality).
    """

    rule_id: str
    technique: str
    score: int
    title: str
    runbook: str
    reason: str = ""
    tactic: str = ""
    cases: tuple[Case, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Rule:
    """One per-event rule: Detection metadata, the check, and where it can fire (used by the prefilter)."""

    detection: Detection
    check: RuleCheck
    event_names: frozenset[str] = frozenset()
    identity_types: frozenset[str] = frozenset()
    event_sources: frozenset[str] = frozenset()

    def applies(self, name: str, identity_type: str, source: str) -> bool:
        """Whether the check should see this event. A rule bound to services skips events of another
        service (eventNames repeat across services); an event without any eventSource is not excluded."""
        return (
            (not self.event_names or name in self.event_names)
            and (not self.identity_types or identity_type in self.identity_types)
            and (not self.event_sources or not source or source in self.event_sources)
        )


REGISTERED: list[Rule] = []


def rule(
    rule_id: str,
    technique: str,
    score: int,
    title: str,
    runbook: str,
    *,
    reason: str = "",
    events: Iterable[str] = (),
    identity_types: Iterable[str] = (),
    sources: Iterable[str] = (),
    tests: Iterable[Case] = (),
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a check as a rule, filed under the ATT&CK tactic its module is named after.

    A rule must name its eventNames or identity types: no rule sees every row. ``sources`` are service
    names (``"s3"``) or full eventSources.
    """

    def register(check: RuleCheck) -> RuleCheck:
        rule = Rule(
            Detection(
                rule_id,
                technique,
                score,
                title,
                runbook,
                reason=reason,
                tactic=check.__module__.rpartition(".")[2],
                cases=tuple(tests),
            ),
            check,
            frozenset(events),
            frozenset(identity_types),
            frozenset(f"{s}.amazonaws.com" if "." not in s else s for s in sources),
        )
        if not rule.event_names and not rule.identity_types:
            raise ValueError(f"rule {rule_id} names neither eventNames nor identity types")
        if not 0 <= score <= 100:
            raise ValueError(f"rule {rule_id} has score {score} outside 0-100")
        REGISTERED.append(rule)
        return check

    return register


@dataclass(frozen=True)
class FrameRule:
    """A rule over the whole frame, vectorised: for checks any event could need (where its address is,
    which threat list it is on) that would cost a Python call per event as a per-event rule. The check
    returns (row position, reason) pairs and reads each distinct value once, not each row. Its cases are
    records like a window rule's."""

    detection: Detection
    check: FrameCheck


FRAME_REGISTERED: list[FrameRule] = []


def frame_rule(
    rule_id: str,
    *,
    title: str,
    technique: str,
    score: int,
    reason: str,
    runbook: str,
    tests: Iterable[Case] = (),
) -> Callable[[FrameCheck], FrameCheck]:
    """Register a vectorised check over a day's frame as a rule (see :class:`FrameRule`), filed under the
    tactic its module is named after."""

    def register(check: FrameCheck) -> FrameCheck:
        if not 0 <= score <= 100:
            raise ValueError(f"rule {rule_id} has score {score} outside 0-100")
        detection = Detection(rule_id, technique, score, title, runbook, reason=reason,
                              tactic=check.__module__.rpartition(".")[2], cases=tuple(tests))  # fmt: skip
        FRAME_REGISTERED.append(FrameRule(detection, check))
        return check

    return register
