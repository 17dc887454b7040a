"""The human review queue: items the model was unsure of, labelled by people on a web page.

``queue`` reads and writes ClickHouse, ``leases`` keeps reviewers off each other's items, ``service`` ties
them together (labels go to their topic through ``kafka.ingest``'s producer) for ``routes``, which serves
the pages and their API; ``server`` runs them alone (``emostream review``), while ``emostream up`` mounts
them beside the worker; ``simulate`` answers the queue from gold labels (benchmarks, the demo).
"""
