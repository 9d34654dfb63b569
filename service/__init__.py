"""The Driftline cloud service: ingest, exactly-once merge, drift, canaries, metrics, retraining webhooks.

Build one with :func:`driftline.service.app.create_app`; run one with ``driftline service``.
"""
