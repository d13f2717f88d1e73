"""The ingest wing: CloudTrail in, normalised rows into the store.

Owns the sources (folder, ``s3://``, ``cloudwatch://``: ``sources``), the normalisation of one record
into the stored columns (``normalise``) and ingestion itself: plan, stage and commit partitions, dedupe,
quarantine, manifest (``ingestion``).
May import: ``trailguard.store``.
"""
