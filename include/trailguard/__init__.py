"""TrailGuard: CloudTrail ingestion, data quality and ML risk scoring.

The library knows nothing of Airflow: DAGs, the command line and the tests all call these functions.
It reads as the pipeline does, one wing per stage; each wing imports only the wings above it in this list:

- ``store/``   data root and file system, the partitioned event store, the stored event's schema, settings
- ``ingest/``  sources (folder, S3, CloudWatch Logs), normalisation, ingestion (plan, stage, commit)
- ``quality/`` the Great Expectations gate, quarantine of bad rows, the quality page
- ``detect/``  the Event wrapper, policy helpers, rules by ATT&CK tactic, window rules, the engine
- ``model/``   enrichment, features, labels, training (MLflow), scoring
- ``report/``  the daily report, the email, run summaries, templates
- ``demo/``    the demo organisation, its traffic and attacks, the demo runner
- ``cli.py``   the ``trailguard`` command line, on top of everything
"""

__version__ = "0.1.0"
