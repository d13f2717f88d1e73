"""The demo wing: a generated organisation with attacks, and the runner behind ``trailguard demo``.

Owns the organisation's tables (``organisation``), its normal traffic (``traffic``), the attack scenarios
(``attacks``), the writer of logs in AWS's S3 layout (``generator``) and the demo runner (``runner``).
May import: every wing below (store, ingest, quality, detect, model, report, respond).
"""
