"""PareCO: slimmable networks whose per-layer widths are learned on the accuracy-FLOPs front."""

__version__ = "0.1.0"
