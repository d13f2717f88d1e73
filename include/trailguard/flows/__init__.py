"""The flows wing: VPC Flow Logs, the third use case (anomalous network sessions between VPCs and to the
internet).

Owns the flow record's stored schema and the readers of AWS's deliveries (``logs``: text with a header line,
any field list of versions 2-5, ``-`` as null, NODATA/SKIPDATA kept; the Parquet delivery; text without a
header in the configured format; the limits from settings), CloudWatch Logs groups of flow logs as a
source (``sources``), ingestion into ``flows/date=D/`` with its own manifest and quarantine, the format
told from the content (``ingestion``), the Great Expectations suite for a day of flows (``quality``) and
the network detections per interface, written as score rows to ``flows_scores/date=D/`` (``detect``; their
catalogue records are ``trailguard.detect.network``).
May import: ``trailguard.store``, ``trailguard.ingest``, ``trailguard.intel``, ``trailguard.quality`` and
``trailguard.detect``; the network model (``trailguard.model.network``) and the findings import it.
``features`` builds the daily rows per interface the network model reads; ``context`` the instance and role
behind an interface, from CloudTrail in the event store.
"""
