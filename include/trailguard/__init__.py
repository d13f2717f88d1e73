"""TrailGuard: CloudTrail ingestion, data quality and ML risk scoring.

The library knows nothing of Airflow: DAGs, the command line and the tests all call these functions.
"""

__version__ = "0.1.0"
