"""A small demo store with hostile events planted (script payloads in the principal, the user agent, the
eventName, the errorCode and request parameters) and its activity tables, shared by the explore tests."""

from __future__ import annotations

import pytest
from trailguard.explore import activity as act

from tests.explore.payloads import IMG_PAYLOAD, PAYLOAD, SVG_PAYLOAD


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.normalise import normalise, rows_to_table
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.events import EventStore

    root = tmp_path_factory.mktemp("explore")
    summary = generator.generate(root / "logs", days=3, events=2_400, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs" / "AWSLogs"), store)
    hostile = []
    for i in range(6):
        hostile.append(normalise({
            "eventVersion": "1.09", "eventID": f"hostile-{i}", "eventTime": f"{summary.end}T10:{i:02d}:00Z",
            "eventSource": "iam.amazonaws.com", "eventName": f"CreateUser{SVG_PAYLOAD}" if i % 2 else "ConsoleLogin",
            "eventType": "AwsApiCall", "sourceIPAddress": "203.0.113.9", "userAgent": PAYLOAD,
            "errorCode": IMG_PAYLOAD if i < 2 else None, "awsRegion": "us-east-1",
            "recipientAccountId": "111122223333", "responseElements": {"ConsoleLogin": "Success"},
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::111122223333:user/{PAYLOAD}",
                             "accountId": "111122223333"},
            "requestParameters": {"userName": PAYLOAD},
        }, "test"))  # fmt: skip
    store.append_events(rows_to_table(hostile), "hostile")
    for day in store.dates():
        act.write_day_activity(store, day)
    return store
