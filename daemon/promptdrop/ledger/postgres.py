"""The shared ledger in PostgreSQL, for several hosts watching one synced drive.

Chosen by a `postgresql://` URL. Same interface and behaviour as the SQLite ledger (the SQL is
shared, in `ledger.base`); what differs:

- Paths are stored relative to the watched roots (`roots`: rule name → this host's folder),
  so hosts that mount the drive at different places agree on which file is which. Every rule
  name must therefore name the same shared folder on every host.
- Claims (leases) are timed by the database server's clock.
- Guarded transitions lock the job's claim row (`SELECT … FOR UPDATE`), so a take-over and the
  old holder's last move cannot both commit.
- A lost connection (the server restarts, the network drops) is waited out: each operation
  reconnects with backoff and runs again, for up to `reconnect_timeout` seconds, and then
  raises LedgerUnavailable. A transaction whose commit may have gone through before the
  connection died is checked before it is run again, so nothing is done twice.

The waits block the calling thread, like every ledger call: while the database is away, the
daemon waits with it rather than doing work it could not record.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import dict_row

from promptdrop.backoff import LEDGER_RECONNECT
from promptdrop.ledger import pg_migrations
from promptdrop.ledger.base import LedgerBase
from promptdrop.ledger.errors import LedgerUnavailable
from promptdrop.ledger.paths import PathCodec

log = structlog.get_logger("promptdrop.ledger")
T = TypeVar("T")

_PG_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
_RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError)


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0].lower() in ("postgresql", "postgres")


def redact(url: str) -> str:
    """The URL without its password (and without query options), fit for a log line."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "postgresql://(unreadable URL)"
    host = parts.hostname or "localhost"
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{port}" if port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PostgresLedger(LedgerBase):
    """The job ledger in a PostgreSQL database (psycopg 3, one connection, sync)."""

    _NOW = _PG_NOW
    _LOCK = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        roots: Mapping[str, Path | str] | None = None,
        clock: Callable[[], float] = time.time,
        reconnect_timeout: float = 300.0,
        connect_timeout: int = 10,
    ) -> None:
        self.url = url
        self._clock = clock
        self._paths = PathCodec(roots)
        self.reconnect_timeout = reconnect_timeout
        self._connect_timeout = connect_timeout
        self._in_tx = False
        self._closed = False
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        try:
            self._conn = self._connect()
            pg_migrations.migrate(self._conn)
        except psycopg.Error as exc:
            self.close()
            raise LedgerUnavailable(
                f"cannot open the shared ledger at {self.location}: {_reason(exc, self.url)}. "
                "Check the ledger URL, that the PostgreSQL server runs and accepts this host, "
                "and that the user may create tables in the database"
            ) from None

    @property
    def location(self) -> str:
        return redact(self.url)

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        # Keepalives: a server that vanished without closing the socket is noticed in
        # about 20 s instead of hanging a call for the kernel's default two hours.
        return psycopg.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._connect_timeout,
            application_name="promptdrop",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=2,
        )

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresLedger:
        return self

    def set_roots(self, roots: Mapping[str, Path | str]) -> None:
        """Use these watched roots (rule name → this host's folder) from now on (a reload)."""
        self._paths = PathCodec(roots)

    def register_roots(self, host: str, roots: Mapping[str, Path | str]) -> None:
        """Record where each rule's folder is on `host`, and use these roots from now on."""
        self.set_roots(roots)
        now = self._clock()

        def work() -> None:
            self._run("DELETE FROM hosts WHERE host = ?", [host])
            for rule, root in roots.items():
                self._run(
                    "INSERT INTO hosts (host, rule, root, seen_at) VALUES (?,?,?,?)",
                    [host, rule, str(root), now],
                )

        self._atomic(work)

    def roots_of(self, host: str) -> dict[str, str]:
        """The roots `host` registered when its daemon last started (empty if none)."""
        rows = self._rows("SELECT rule, root FROM hosts WHERE host = ? ORDER BY rule", [host])
        return {str(r["rule"]): str(r["root"]) for r in rows}

    def integrity_check(self) -> str:
        """'ok' when the server answers and every migration is recorded."""
        names = {r["name"] for r in self._rows("SELECT name FROM migrations")}
        missing = [name for name, _ in pg_migrations.MIGRATIONS if name not in names]
        return "ok" if not missing else f"missing migrations: {', '.join(missing)}"

    # Primitives ---------------------------------------------------------------------------

    def _live(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None:
            if self._closed:
                raise LedgerUnavailable("the shared ledger is closed")
            # Gave up waiting earlier: try again now (a failure here is handled as a loss).
            self._conn = self._connect()
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[dict[str, Any]]:
        return self._live().execute(sql.replace("?", "%s"), list(params))

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._in_tx:
            return self._execute(sql, params).fetchall()
        return self._retrying(lambda: self._execute(sql, params).fetchall())

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        # Single statements outside a transaction are all idempotent (upserts, guarded
        # updates, deletes by key), so running one again after a lost connection is safe.
        if self._in_tx:
            return int(self._execute(sql, params).rowcount)
        return self._retrying(lambda: int(self._execute(sql, params).rowcount))

    def _lock_budget(self, rule: str) -> None:
        # Held until the transaction ends: every host's budgeted intents of one rule queue here.
        self._rows(
            "SELECT pg_advisory_xact_lock(hashtext(?)) AS locked", [f"promptdrop-budget:{rule}"]
        )

    def _atomic(
        self, work: Callable[[], None], committed: Callable[[], bool] | None = None
    ) -> None:
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            if tries > 1 and committed is not None and committed():
                return  # the commit went through just before the connection died
            self._in_tx = True
            try:
                with self._live().transaction():
                    work()
            finally:
                self._in_tx = False

        self._retrying(once)

    def _retrying(self, fn: Callable[[], T]) -> T:
        deadline: float | None = None
        while True:
            try:
                return fn()
            except _RETRYABLE as exc:
                conn = self._conn
                lost = conn is None or conn.closed or conn.broken
                if not lost and not isinstance(exc, psycopg.errors.TransactionRollback):
                    raise  # a real error in the statement, not the connection's
                if deadline is None:
                    deadline = time.monotonic() + self.reconnect_timeout
                    log.warning(
                        "lost the connection to the shared ledger; waiting for it",
                        ledger=self.location,
                        error=_reason(exc, self.url),
                        gives_up_after=self.reconnect_timeout,
                    )
                if lost:
                    self._reconnect(deadline, exc)
                elif time.monotonic() > deadline:
                    raise LedgerUnavailable(
                        f"the shared ledger at {self.location} kept refusing a transaction for "
                        f"{self.reconnect_timeout:.0f} s ({_reason(exc, self.url)})"
                    ) from None
                    log.info("connection to the shared ledger is back", ledger=self.location)

    def _reconnect(self, deadline: float, first: BaseException) -> None:
        with contextlib.suppress(psycopg.Error):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        attempt = 0
        last: BaseException = first
        while time.monotonic() < deadline:
            try:
                self._conn = self._connect()
                return
            except psycopg.OperationalError as exc:
                last = exc
            # Never sleep past the deadline: the last try comes just before giving up.
            time.sleep(min(LEDGER_RECONNECT.delay(attempt), max(deadline - time.monotonic(), 0.0)))
            attempt += 1
        raise LedgerUnavailable(
            f"the shared ledger at {self.location} did not come back within "
            f"{self.reconnect_timeout:.0f} s ({_reason(last, self.url)}); check the PostgreSQL "
            "server"
        )


def _reason(exc: BaseException, url: str) -> str:
    # libpq's messages name the server and the problem; a message about a malformed URL may
    # quote part of it, so the password is blanked out in any case.
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    try:
        secret = urllib.parse.urlsplit(url).password
    except ValueError:
        secret = None
    for form in {secret, urllib.parse.unquote(secret or "")} - {None, ""}:
        text = text.replace(str(form), "***")
    return text
