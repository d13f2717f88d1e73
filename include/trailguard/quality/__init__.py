"""The quality wing: the Great Expectations gate on each day's events, quarantine of bad rows, the quality page.

``expectations`` defines every expectation once (GX class, arguments, ``$PARAMETER`` bounds; the same
definition picks the rows to quarantine); ``suites`` builds the GX suites from them once and runs them
through a Checkpoint; ``checks`` prepares what each suite is run on and reads its results; ``quarantine``
moves bad rows out of the partition; ``results`` holds the verdicts; ``gate`` runs a day
(``validate_partition``, ``is_scorable``); ``page`` renders ``templates/quality.html``.

May import: ``trailguard.store``, ``trailguard.ingest`` and ``trailguard.integrity`` (the quality page shows the
day's evidence integrity).
"""
