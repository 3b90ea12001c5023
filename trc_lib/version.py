"""The library's version, recorded in every dataset and checkpoint it writes."""

__version__ = "0.3.0"
