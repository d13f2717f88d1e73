"""The rule registry: the ``@rule`` decorator every per-event detection is declared with, and the list it fills.

Rule modules (``detect/rules/<tactic>.py``) import this; the engine imports the rule modules, so the
registry itself imports no rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trailguard.detect.event import Detection, Event

if TYPE_CHECKING:
    import pandas as pd

RuleCheck = Callable[[Event], "str | None"]
FrameCheck = Callable[["pd.DataFrame"], "Iterable[tuple[int, str]]"]


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
    events: Iterable[str] = (),
    identity_types: Iterable[str] = (),
    sources: Iterable[str] = (),
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a check as a rule. A rule must name its eventNames or identity types: no rule sees every row."""

    def register(check: RuleCheck) -> RuleCheck:
        rule = Rule(
            Detection(rule_id, technique, score, title, runbook),
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
    """A rule over the whole frame, vectorised: for checks every event could need (where an address is,
    which list it is on) that would cost a Python call per event as a per-event rule. The check returns
    (row position, reason) pairs; it must read each distinct value once, not each row."""

    detection: Detection
    check: FrameCheck


FRAME_REGISTERED: list[FrameRule] = []


def frame_rule(rule_id: str, technique: str, score: int, title: str, runbook: str) -> Callable[[FrameCheck], FrameCheck]:
    """Register a vectorised check over a day's frame as a rule (see :class:`FrameRule`)."""

    def register(check: FrameCheck) -> FrameCheck:
        if not 0 <= score <= 100:
            raise ValueError(f"rule {rule_id} has score {score} outside 0-100")
        FRAME_REGISTERED.append(FrameRule(Detection(rule_id, technique, score, title, runbook), check))
        return check

    return register
