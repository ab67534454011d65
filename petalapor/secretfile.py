"""Secrets the project generates for itself (auth secret, reporter salt) under ``var/``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, generate: Callable[[], str]) -> bytes:
    """The file's stripped content; first written (mode 0600) with ``generate()`` when missing.

    Two processes starting together agree: the file is created exclusively, and
    the one that loses the race reads the winner's value.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate())
    return path.read_text().strip().encode()
