"""The version of transferkit (a module of its own, so that any module can import it without
importing the package and its public API)."""

__version__ = "0.1.0"
