"""The store wing: where TrailGuard keeps things, and the settings that say where.

Owns the data root and its file system (local folder or ``s3://``, atomic writes: ``fs``), the
date-partitioned event store with its manifest and dedupe keys (``events``), the stored event's schema
(``schema``), the one frozen settings object built from the environment (``settings``) and the one
autoescaping Jinja2 environment every wing's pages are rendered through (``render``).
May import: nothing of TrailGuard. Every other wing builds on this one.
"""
