"""Exploring the data before choosing features: per-day activity aggregates and the views built on them.

Owns ``activity/date=D/`` (small per-day tables written once when a day is validated), the views computed
only from those tables (activity dashboards, the PCA behaviour map), the reports / quality / models
listings, and their rendering (Jinja2 with autoescape, inline SVG, a strict Content-Security-Policy) for
``trailguard explore`` and the Airflow plugin. Nothing here reads raw events at page load.

May import ``store``, ``quality``, ``model`` (enrichment: country, ASN) and ``report``; nothing imports it
but the command line, the demo and the Airflow side.
"""
