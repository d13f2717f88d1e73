"""Trust the evidence: CloudTrail log-file integrity (digest files) and delivery gaps.

Owns reading and validating CloudTrail digest files (their RSA signatures, their chain, the SHA-256 of
every log file they list against what ingestion read) and finding hours in which an account/region that
normally delivers sent nothing. Results go to ``integrity/date=YYYY-MM-DD/`` under the data root.

May import: ``trailguard.store`` and ``trailguard.ingest``. It sits beside ingest, below quality and report,
which read its results (``findings``).
"""
