"""The ``timellm`` command line (on top of :mod:`timellm.experiments` and the public API)."""

from timellm.cli.main import main

__all__ = ["main"]
