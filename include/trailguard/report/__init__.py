"""The report wing: what people read. The daily report (``daily``), the email (``mail``), run summaries
(``summaries``) and their Jinja2 ``templates/``.

May import: ``trailguard.store``, ``trailguard.ingest``, ``trailguard.integrity``, ``trailguard.quality``,
``trailguard.detect`` and ``trailguard.model``.
"""
