"""emostream: real-time emotion scores for social-media streams."""

__version__ = "0.1.0"
