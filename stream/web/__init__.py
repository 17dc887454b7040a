"""The worker's HTTP endpoint: its views, credentials and sessions, the client other processes use to
reach it, and the worker's metrics and readiness."""
