"""The human review queue: items the model was unsure of, labelled by people on a web page.

``queue`` reads and writes ClickHouse, ``leases`` keeps reviewers off each other's items, ``producer``
puts labels on their topic, ``service`` ties them together for ``web``, which serves the pages; ``server``
runs them alone (``emostream review``), while ``emostream up`` mounts them beside the worker.
"""
