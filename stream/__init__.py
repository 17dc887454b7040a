"""The streaming side: model runtime (and, with the streaming issue, the Faust app, sinks and ingest)."""
