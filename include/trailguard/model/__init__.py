"""The model wing: from events to risk scores.

Owns enrichment (GeoIP country/ASN, networks: ``enrich``), per-event and per-principal features
(``features``), analysts' labels and training targets (``labels``), the bounded training sample
(``sampling``), training with MLflow and the champion gate (``training``) and daily scoring (``scoring``).
May import: ``trailguard.store``, ``trailguard.ingest``, ``trailguard.quality`` and ``trailguard.detect``.
"""
