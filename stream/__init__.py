"""The streaming side, in rooms of one concern each (``docs/architecture.md`` has the table).

- ``kafka``: the embedded broker, topics, the topics' codecs, ``ingest``, and Faust's internals;
- ``clickhouse``: the sink that writes rows, its DDL, read-only user SQL and the trend queries;
- ``web``: the worker's HTTP endpoint (views, credentials, sessions), its client, metrics and readiness;
- ``worker``: the Faust app, the micro-batch pipeline, record parsing, scoring, the review policy, the
  model swap and shutdown, and ``process``, which assembles them into ``emostream worker``;
- ``review``: the human review queue and its pages;
- ``discovery``: the small files through which the embedded mode's processes find each other.
"""
