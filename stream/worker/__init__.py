"""The worker: the Faust app, the micro-batch pipeline, record parsing (``records``), scoring, what goes to
review (``review_policy``), the model swap, shutdown, and ``process``, which puts them together."""
