"""The TrailGuard pages in the Airflow 3 UI: a "TrailGuard" navigation entry and the pages behind it.

The pages (reports, activity, behaviour map, data quality, models) and their JSON are a FastAPI app
mounted in the api-server at ``/trailguard`` (``include/trailguard_airflow/explore_app.py``), behind
Airflow's own login; the navigation entry shows them inside the UI (``/plugin/trailguard``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from trailguard_airflow.explore_app import URL_PREFIX, create_app


class TrailGuardPlugin(AirflowPlugin):
    name = "trailguard"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "TrailGuard"}]
    external_views = [
        {
            "name": "TrailGuard",
            "href": f"{URL_PREFIX}/reports",
            "url_route": "trailguard",
            "destination": "nav",
        }
    ]
