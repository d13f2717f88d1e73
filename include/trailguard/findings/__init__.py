"""The findings wing: a day's scored events correlated into findings an analyst can act on.

Why a wing of its own, between ``model`` and ``report``: a finding (one credential's chain of events
from one source, its tactics and its score from all its evidence) is what the daily report, the email,
the CSV, ``trailguard label`` and automation all consume; keeping it apart from the report's rendering
lets each of them use findings without the HTML, and keeps ``report/daily.py`` about presentation.

Owns the correlation and the finding score (``correlate``), what a principal usually does against what it
did now (``baseline``) and analysts' suppressions of benign patterns (``suppress``).
May import: ``trailguard.store``, ``trailguard.ingest``, ``trailguard.detect`` and ``trailguard.model``.
"""
