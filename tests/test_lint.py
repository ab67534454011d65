"""All the Python code passes ruff (the settings in pyproject.toml), lint and format."""

from __future__ import annotations

import subprocess
import sys

from petalapor.settings import PROJECT_ROOT

#: What ruff checks: all the Python code.
CHECKED = ["petalapor", "gis", "db", "tiles", "layers", "api", "web_map", "bench", "tests"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *CHECKED],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_ruff_check():
    done = ruff("check", "--output-format", "concise")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    done = ruff("format", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
