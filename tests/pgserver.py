"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on 127.0.0.1, ephemeral port.

Each pytest-xdist worker starts its own server (session scope) in a fresh temporary folder and
stops it at the end. Each test gets a fresh schema (`pg_url`), so tests never see each other's
rows. The server runs without fsync (it is thrown away, and surviving a power cut is not what
these tests check) but with synchronous commits, so a commit survives the server being killed.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` system user (Debian's packages create it) in a folder that user owns.

No binaries: the tests fail when CI is set (CI must install them: `.ci/run` does), and are
skipped otherwise, with a reason that says how to install them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found; install them to run the shared "
    "ledger's tests: `sudo apt-get install postgresql` (Debian/Ubuntu), or put a PostgreSQL "
    "bin folder first on PATH, or set PROMPTDROP_PG_BIN to it"
)


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: $PROMPTDROP_PG_BIN, PATH, then Debian's places."""
    explicit = os.environ.get("PROMPTDROP_PG_BIN")
    candidates = [explicit] if explicit else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    # Debian installs versioned folders; take the newest.
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.as_user: str | None = "postgres" if os.geteuid() == 0 else None
        self.base = Path(tempfile.mkdtemp(prefix="promptdrop-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        if self.as_user is not None:
            pw = pwd.getpwnam(self.as_user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        # Sockets only in our own folder and on loopback; throwaway, so no fsync.
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        self.start()

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_user is not None:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(
            cmd, check=check, capture_output=True, text=True, cwd=self.base, timeout=120
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else ""
        )

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self._run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start"]
        )

    def stop(self) -> None:
        """Stop the server now (open connections are cut, as in a crash of the database)."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], check=False)

    @property
    def running(self) -> bool:
        return self._run(["pg_ctl", "-D", str(self.data), "status"], check=False).returncode == 0

    def new_schema(self) -> str:
        """A fresh, empty schema; returns a URL whose connections use only that schema."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(options=f"-csearch_path%3D{name}")

    def new_database(self) -> str:
        """A fresh, empty database (for tests that need a whole database of their own)."""
        import psycopg

        name = "d_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A running throwaway PostgreSQL for this test process (each xdist worker has its own)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    server = PgServer(bin_dir)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A URL to an empty schema of its own on the test server; the server is up on return."""
    if not pg_server.running:
        pg_server.start()  # a previous test stopped it and failed before starting it again
    yield pg_server.new_schema()


@contextlib.contextmanager
def outage(server: PgServer, seconds: float) -> Iterator[None]:
    """Stop the server for `seconds` (in the background of the block), then start it again."""
    server.stop()
    stopped_at = time.monotonic()
    try:
        yield
    finally:
        rest = seconds - (time.monotonic() - stopped_at)
        if rest > 0:
            time.sleep(rest)
        server.start()
