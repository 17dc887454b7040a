"""The model layer: the serving runtime and the versioned registry, shared by ``stream`` and ``trainer``."""
