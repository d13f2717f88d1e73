"""The stored event's schema: the columns of `events/date=D/*.parquet`, shared by every wing that reads them.

It lives in the store wing because the store owns what it keeps; ingestion fills these columns and the
readers (quality, detections, features) select from them.
"""

from __future__ import annotations

import pyarrow as pa

# (column, path into the record) for the flat string columns
STRING_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("eventVersion", ("eventVersion",)),
    ("eventSource", ("eventSource",)),
    ("eventName", ("eventName",)),
    ("eventType", ("eventType",)),
    ("eventCategory", ("eventCategory",)),
    ("awsRegion", ("awsRegion",)),
    ("sourceIPAddress", ("sourceIPAddress",)),
    ("userAgent", ("userAgent",)),
    ("userIdentity.type", ("userIdentity", "type")),
    ("userIdentity.arn", ("userIdentity", "arn")),
    ("userIdentity.accountId", ("userIdentity", "accountId")),
    ("userIdentity.principalId", ("userIdentity", "principalId")),
    ("userIdentity.userName", ("userIdentity", "userName")),
    ("userIdentity.invokedBy", ("userIdentity", "invokedBy")),
    ("userIdentity.accessKeyId", ("userIdentity", "accessKeyId")),
    (
        "userIdentity.sessionContext.sessionIssuer.arn",
        ("userIdentity", "sessionContext", "sessionIssuer", "arn"),
    ),
    (
        "userIdentity.sessionContext.sessionIssuer.userName",
        ("userIdentity", "sessionContext", "sessionIssuer", "userName"),
    ),
    (
        "userIdentity.sessionContext.attributes.mfaAuthenticated",
        ("userIdentity", "sessionContext", "attributes", "mfaAuthenticated"),
    ),
    ("errorCode", ("errorCode",)),
    ("errorMessage", ("errorMessage",)),
    ("recipientAccountId", ("recipientAccountId",)),
    ("vpcEndpointId", ("vpcEndpointId",)),
    ("requestID", ("requestID",)),
    ("responseElements.ConsoleLogin", ("responseElements", "ConsoleLogin")),
    ("additionalEventData.MFAUsed", ("additionalEventData", "MFAUsed")),
)
BOOL_FIELDS: tuple[str, ...] = ("readOnly", "managementEvent")
JSON_FIELDS: tuple[str, ...] = ("requestParameters", "responseElements")

EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")
EVENT_SCHEMA = pa.schema(
    [
        pa.field("eventID", pa.string(), nullable=False),
        pa.field("eventTime", EVENT_TIME_TYPE, nullable=False),
        *[pa.field(name, pa.string()) for name, _ in STRING_FIELDS],
        *[pa.field(name, pa.bool_()) for name in BOOL_FIELDS],
        *[pa.field(name, pa.string()) for name in JSON_FIELDS],
        pa.field("raw", pa.string()),
        pa.field("source_key", pa.string()),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
