"""Detections: analyst knowledge as code, for the cold start of the risk model and the reasons in reports.

Owns the :class:`~trailguard.detect.event.Event` wrapper, policy helpers, the per-event rules grouped by
ATT&CK tactic (``rules/<tactic>.py``, each declared with ``registry.rule`` together with its test cases,
built with ``samples``), the window rules, the engine that labels a day and the catalogue that lists them
(``catalogue``: ``trailguard rules``, ``docs/detections.md``).
May import: ``trailguard.store`` (the stored event's columns), ``trailguard.ingest`` and ``trailguard.intel``
(where an address is, threat lists). Nothing above.
"""
