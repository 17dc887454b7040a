"""emostream: real-time emotion scores for social-media streams.

This folder is the top layer, over ``schemas``, ``model``, ``stream`` and ``trainer``: the command line
(``cli`` and the ``*_commands`` modules) and the library only the top may hold: the settings
(``settings``), the retraining job that joins the labels in ClickHouse with training (``retraining``),
the embedded stack as a child process (``stack``), the demo (``demo``) and rendering for people
(``console``).
"""

__version__ = "0.1.0"
