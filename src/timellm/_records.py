"""Checks shared by the readers of the files timellm writes (run records, forecaster files)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def check_known_keys(
    record: dict, known: Iterable[str], path: str | Path, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` when ``record`` (read from ``path``) has a key outside ``known``.

    A key this version does not know comes from a newer or a foreign writer: reading on without it
    would drop a setting silently, so it is an error that names the key and what is known.
    """
    known = frozenset(known)
    unknown = set(record) - known
    if unknown:
        raise error(
            f"{path} has unknown key(s) {', '.join(sorted(unknown))}: it was written by another "
            f"version of timellm; known: {', '.join(sorted(known))}"
        )
