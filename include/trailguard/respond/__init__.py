"""Respond: where findings go once they are found, and how TrailGuard tells people when it breaks.

Owns the automation destinations (Amazon SNS, EventBridge, Lambda, Slack, a generic signed webhook), the
one finding message they all receive (:mod:`.message`), the ledger that sends each finding to each
destination once across reruns (:mod:`.ledger`), and the operational alerts (freshness of CloudTrail
deliveries, critical validation failures, failed tasks; :mod:`.alerts`).

May import: ``trailguard.store`` (data root, settings, events) and ``trailguard.report`` (the day's
``report.json``, text cleaning). Only ``demo`` and ``cli`` import it. Knows nothing of Airflow: the glue in
``trailguard_airflow`` passes connections and Variables in as plain values.
"""
