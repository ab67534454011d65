"""pyproject.toml and environment.yml list the same libraries."""

from __future__ import annotations

import re
import tomllib

from petalapor.settings import PROJECT_ROOT

#: conda-forge names that differ from PyPI's (a PyPI extra may be its own conda package).
CONDA_NAMES = {"h3": "h3-py", "uvicorn[standard]": "uvicorn-standard"}
#: conda-only entries (the database binaries, npm for the map pages, tooling).
CONDA_ONLY = {"python", "postgresql", "postgis", "nodejs", "pip"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _conda_name(requirement: str) -> str:
    name = _name(requirement)
    extras = re.match(r"^[A-Za-z0-9_.-]+(\[[a-z,]+\])", requirement.strip())
    return CONDA_NAMES.get(name + (extras[1] if extras else ""), CONDA_NAMES.get(name, name))


def _pyproject() -> set[str]:
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    names = {_conda_name(r) for r in meta["dependencies"]}
    for extra in meta["optional-dependencies"].values():
        names |= {_conda_name(r) for r in extra}
    return names


def _environment() -> set[str]:
    names = set()
    text = (PROJECT_ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:", 1)[1]
    for line in deps.splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.-]+)", line)
        if match:
            names.add(_name(match[1]))
    return names - CONDA_ONLY


def test_same_dependencies():
    py, env = _pyproject(), _environment()
    assert py - env == set(), f"in pyproject.toml but not environment.yml: {sorted(py - env)}"
    assert env - py == set(), f"in environment.yml but not pyproject.toml: {sorted(env - py)}"


def test_environment_has_database_binaries_and_npm():
    text = (PROJECT_ROOT / "environment.yml").read_text()
    assert re.search(r"^  - postgresql", text, re.M) and re.search(r"^  - postgis", text, re.M)
    assert re.search(r"^  - nodejs", text, re.M)  # web_map/package.json wants npm


def test_console_script_and_python():
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["petalapor"] == "petalapor.cli:main"
    assert meta["requires-python"] == ">=3.11"


def test_ci_runs_the_readme_test_command():
    ci = [
        line.strip()
        for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["./dev test"]
    assert "./dev test" in (PROJECT_ROOT / "README.md").read_text()
