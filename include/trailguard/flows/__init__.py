"""The flows wing: VPC Flow Logs, the third use case (anomalous network sessions between VPCs and to the
internet).

Owns the flow record's stored schema and the reader of AWS's text delivery (``logs``: header line, any
field list of versions 2-5, ``-`` as null, NODATA/SKIPDATA kept), ingestion into ``flows/date=D/`` with its
own manifest and quarantine (``ingestion``), the Great Expectations suite for a day of flows
(``quality``) and the network detections per interface, written as score rows to ``flows_scores/date=D/``
(``detect``).
May import: ``trailguard.store``, ``trailguard.ingest``, ``trailguard.quality`` and ``trailguard.detect``;
the network model (``trailguard.model.network``) and the findings import it. ``features`` builds the daily
rows per interface the network model reads; ``context`` the instance and role behind an interface, from
CloudTrail in the event store.
"""
