"""The embedded PostgreSQL + PostGIS cluster under ``var/pg/``.

petalapor runs its own private cluster unless ``DATABASE_URL`` is set::

    var/pg/data/          initdb's data directory (owned by the server's user)
    var/pg/postgres.log   server log
    var/pg/cluster.json   the port and user the cluster was started with

It listens on 127.0.0.1 (port 5433 by default, or a free one when that is taken
or the port setting is 0) and on a unix socket inside ``var/pg/``.  When the
process runs as root the server runs as the ``postgres`` system user, since
PostgreSQL refuses to run as root.  Authentication is ``trust`` for local
connections only: the cluster is a private development and test store.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from petalapor.errors import ClusterError

if TYPE_CHECKING:
    import psycopg

#: What to install when the binaries are missing, per platform.
INSTALL_HINT = (
    "PostgreSQL with PostGIS is needed for the embedded database: on Debian/Ubuntu "
    "`apt-get install postgresql-15-postgis-3`; with conda `conda install -c conda-forge "
    "postgresql postgis`; on macOS `brew install postgis`. Or set DATABASE_URL to an "
    "existing PostGIS server."
)
SUPERUSER = "postgres"
#: Settings of the embedded (development and test) cluster, for bulk loads.  A
#: DATABASE_URL server keeps its own configuration; db.ingest works on either.
#:
#: * ``wal_level=minimal`` (needs ``max_wal_senders=0``): no replication or PITR
#:   for a private dev store.  A table created or truncated in the loading
#:   transaction (db.ingest's first load into an empty ``reports``) and the
#:   indexes built on it then skip WAL; the files are synced at commit instead.
#: * ``max_wal_size``/``checkpoint_timeout``: no checkpoint storm mid-import.
#: * ``maintenance_work_mem``: index rebuilds of bulk imports sort in memory.
SERVER_OPTIONS = (
    " -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=4GB"
    " -c checkpoint_timeout=30min -c maintenance_work_mem=512MB"
)


@dataclass(frozen=True)
class Binaries:
    """Locations of the PostgreSQL server programs."""

    bindir: Path
    sharedir: Path

    def tool(self, name: str) -> str:
        """Full path of one program (``initdb``, ``pg_ctl``, ...)."""
        return str(self.bindir / name)


def find_binaries() -> Binaries:
    """Locate ``initdb``/``pg_ctl`` and check that PostGIS is installed beside them.

    Raises
    ------
    ClusterError
        With :data:`INSTALL_HINT` when either is missing.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for bindir in candidates:
        if not (bindir / "initdb").exists() or not (bindir / "pg_ctl").exists():
            continue
        sharedir = _sharedir(bindir)
        if sharedir and (sharedir / "extension" / "postgis.control").exists():
            return Binaries(bindir=bindir, sharedir=sharedir)
    if any((b / "initdb").exists() for b in candidates):
        raise ClusterError("PostgreSQL is installed but PostGIS is not. " + INSTALL_HINT)
    raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found. " + INSTALL_HINT)


def _sharedir(bindir: Path) -> Path | None:
    """The server's share directory (``pg_config --sharedir`` of that installation)."""
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True)
        if out.returncode == 0:
            return Path(out.stdout.strip())
    # Debian: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
    guess = Path("/usr/share/postgresql") / bindir.parent.name
    if guess.exists():
        return guess
    return bindir.parent / "share" / "postgresql"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Cluster:
    """A private PostgreSQL cluster in one folder.

    Parameters
    ----------
    root
        Folder of the cluster (``var/pg`` by default).
    host, port
        Where it listens; port 0, or a taken port, picks a free one at start.
    dbname
        The application database created inside the cluster.
    """

    def __init__(
        self, root: Path, host: str = "127.0.0.1", port: int = 5433, dbname: str = "petalapor"
    ):
        self.root = Path(root).resolve()
        self.host = host
        self.requested_port = port
        self.dbname = dbname

    # ---------------------------------------------------------------- paths and state
    @property
    def data_dir(self) -> Path:
        """initdb's data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.root / "postgres.log"

    @property
    def state_file(self) -> Path:
        """Where the port chosen at start is recorded."""
        return self.root / "cluster.json"

    @property
    def port(self) -> int:
        """The port the cluster was last started on (or the requested one)."""
        if self.state_file.exists():
            return int(json.loads(self.state_file.read_text())["port"])
        return self.requested_port or 5433

    def dsn(self, dbname: str | None = None) -> str:
        """libpq URL of the application database (or another one)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname or self.dbname}"

    @property
    def initialised(self) -> bool:
        """True once initdb has run here."""
        return (self.data_dir / "PG_VERSION").exists()

    # ---------------------------------------------------------------- running programs
    def _as_server_user(self, argv: list[str]) -> list[str]:
        """Prefix a command so it runs as ``postgres`` when we are root."""
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError as exc:
            raise ClusterError(
                "running as root, but there is no 'postgres' system user to run the server "
                "(PostgreSQL refuses to run as root); create one or run as a normal user"
            ) from exc
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", SUPERUSER, "--", *argv]
        return ["su", SUPERUSER, "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in argv)]

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> str:
        proc = subprocess.run(
            self._as_server_user(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.root),
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise ClusterError(f"{what} failed: {detail}{self._log_tail()}")
        return proc.stdout

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- last lines of " + str(self.log_file) + " ---\n" + "\n".join(tail)

    def _own(self) -> None:
        """Hand the cluster folder to the server user when we are root."""
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(SUPERUSER)
        for path in [self.root, *self.root.rglob("*")]:
            try:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass
        # The server user must be able to reach the folder.
        for parent in self.root.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise ClusterError(
                    f"{parent} is not searchable by the 'postgres' user; "
                    "put the cluster elsewhere with PETALAPOR_DB_DIR"
                )

    # ---------------------------------------------------------------- lifecycle
    def init(self) -> bool:
        """Run initdb once; returns True when it created the cluster now."""
        if self.initialised:
            return False
        binaries = find_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        self._own()
        self._run(
            [
                binaries.tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--lc-collate=C",
                "--no-instructions",
            ],
            "initdb",
        )
        return True

    def running(self) -> bool:
        """True when a server answers for this data directory."""
        if not self.initialised:
            return False
        binaries = find_binaries()
        proc = subprocess.run(
            self._as_server_user([binaries.tool("pg_ctl"), "-D", str(self.data_dir), "status"]),
            capture_output=True,
            text=True,
        )
        return proc.returncode == 0

    def start(self) -> None:
        """Start the server (initdb first if needed) and create the database."""
        self.init()
        if self.running():
            self._create_database()  # a running cluster may not hold this database yet
            return
        binaries = find_binaries()
        port = self.requested_port
        if port == 0 or _port_in_use(self.host, port):
            port = free_port(self.host)
        self.state_file.write_text(json.dumps({"port": port, "host": self.host}))
        self._own()
        options = (
            f"-p {port} -c listen_addresses={self.host} -c unix_socket_directories={self.root}"
            " -c fsync=on -c max_connections=200 -c shared_buffers=256MB" + SERVER_OPTIONS
        )
        self._run(
            [
                binaries.tool("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            "pg_ctl start",
        )
        self._wait_ready()
        self._create_database()

    def stop(self) -> bool:
        """Stop the server if it runs; returns True when it was running."""
        if not self.running():
            return False
        binaries = find_binaries()
        self._run(
            [binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            "pg_ctl stop",
        )
        return True

    def status(self) -> dict[str, object]:
        """What ``petalapor db status`` prints."""
        return {
            "dir": str(self.root),
            "initialised": self.initialised,
            "running": self.running(),
            "port": self.port,
            "dsn": self.dsn(),
        }

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"server did not accept connections: {exc}{self._log_tail()}"
                    ) from exc
                time.sleep(0.2)

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)
            ).fetchone()
            if not exists:
                create_database(conn, self.dbname)


def create_database(conn: psycopg.Connection, name: str) -> None:
    """``CREATE DATABASE name`` whose text sorts in byte order (collation "C").

    ``conn`` is an autocommit connection to the server.  Byte order is the
    order of glibc's C.UTF-8 (code point order), but PostgreSQL compares "C"
    text with memcmp and abbreviated keys, not strcoll: index builds over text
    codes (RW, kelurahan, external ids) take a third less time
    (docs/benchmarks.md).  Encoding and character classes (upper/lower,
    ILIKE) are template1's, as for a plain CREATE DATABASE.
    """
    from psycopg import sql

    encoding, ctype = conn.execute(
        "SELECT pg_encoding_to_char(encoding), datctype FROM pg_database "
        "WHERE datname = 'template1'"
    ).fetchone()
    provider = "LOCALE_PROVIDER libc" if conn.info.server_version >= 150000 else ""
    conn.execute(
        sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE 'C' LC_CTYPE {} {}"
        ).format(sql.Identifier(name), sql.Literal(encoding), sql.Literal(ctype), sql.SQL(provider))
    )


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
