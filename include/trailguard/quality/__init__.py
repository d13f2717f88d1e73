"""The quality wing: the Great Expectations gate on each day's events, quarantine of bad rows, the quality page.

May import: ``trailguard.store``, ``trailguard.ingest`` and ``trailguard.integrity`` (the quality page shows the
day's evidence integrity).
"""
