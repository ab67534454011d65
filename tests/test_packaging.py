"""pyproject.toml and environment.yml list the same libraries; the wheel runs on its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile

from api.routes.pages import VENDOR_FILES
from db.migrate import MIGRATIONS_DIR
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


WHEEL_CHECK = """
import json, os
import petalapor, db.migrate
from petalapor.settings import DATA_DIR, IN_CHECKOUT, PathSettings
from petalapor.catalog import get_catalog
from db.ingest.mapping import load_mapping
from gis.boundaries import default_manifest_path
from api.routes.pages import missing_vendor_files
print(json.dumps({
    "package": petalapor.__file__,
    "in_checkout": IN_CHECKOUT,
    "data_dir": str(DATA_DIR),
    "home": str(PathSettings().home),
    "categories": len(get_catalog().categories),
    "mapping": load_mapping("petabencana").name,
    "manifest": str(default_manifest_path()),
    "migrations": sorted(p.name for p in db.migrate.MIGRATIONS_DIR.glob("*.sql")),
    "missing_vendor": missing_vendor_files(),
}))
"""


def test_the_wheel_runs_without_the_checkout(tmp_path):
    """Data files, migrations and the map pages' npm files are inside the wheel, and found there."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(PROJECT_ROOT)],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("petalapor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("categories.toml", "boundaries/sources.toml", "mappings/petabencana.toml"):
        assert f"petalapor/data/{name}" in names
    assert {f"web_map/node_modules/{f}" for f in VENDOR_FILES} <= names
    assert "web_map/node_modules/leaflet/LICENSE" in names
    assert "web_map/static/petalapor.js" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETALAPOR_")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    out = subprocess.run(
        [sys.executable, "-c", WHEEL_CHECK],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out)
    assert found["package"].startswith(str(tmp_path / "site"))
    assert found["in_checkout"] is False
    assert found["data_dir"] == str(tmp_path / "site" / "petalapor" / "data")
    assert found["home"] == str(work)  # var/ goes where petalapor is run, not into site-packages
    assert found["categories"] > 10 and found["mapping"] == "petabencana"
    assert found["manifest"].startswith(found["data_dir"])
    assert found["migrations"] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    assert found["missing_vendor"] == []
