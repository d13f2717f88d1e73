"""One list of read-only API prefixes: the rules (root read vs change) and the model's categories agree."""

from __future__ import annotations

import pandas as pd
from trailguard.detect.event import Event
from trailguard.detect.policy import READ_ONLY_PREFIXES, is_read_only
from trailguard.model import enrich


def test_detect_and_model_use_the_same_list() -> None:
    assert enrich.READ_ONLY_PREFIXES is READ_ONLY_PREFIXES
    names = [f"{prefix}Things" for prefix in READ_ONLY_PREFIXES] + ["PutThings", "DeleteThings"]
    frame = pd.DataFrame({"eventSource": ["s3.amazonaws.com"] * len(names), "eventName": names})
    model_reads = (enrich.event_category(frame) == "read").tolist()
    rule_reads = [
        is_read_only(Event({"eventName": name})) for name in names
    ]  # no readOnly flag: the name decides
    assert model_reads == rule_reads == [True] * len(READ_ONLY_PREFIXES) + [False, False]
