"""The SQLite ledger's schema, as an append-only list of migrations.

(The PostgreSQL ledger has its own list, with the same names, in `pg_migrations`.)

Never edit or reorder a migration that has shipped: add a new one at the end. Each runs once,
inside a transaction, and is recorded in the `migrations` table by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlite_utils import Database


def _m001_initial(db: Database) -> None:
    db.table("jobs").create(
        {
            "id": int,
            "request_hash": str,
            "image_index": int,
            "rule": str,
            "state": str,
            "generation": int,  # bumped by each deliberate retry
            "request_json": str,
            "attempts": int,  # paid POSTs sent for this job, all generations
            "task_id": str,
            "task_json": str,
            "result_url": str,
            "expires_at": float,
            "image_sha256": str,
            "image_format": str,
            "error": str,
            "created_at": float,
            "updated_at": float,
            "intent_at": float,
            "submitted_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null=["request_hash", "image_index", "state", "request_json"],
        defaults={"generation": 0, "attempts": 0},
    )
    db.table("jobs").create_index(["request_hash", "image_index"], unique=True)
    db.table("jobs").create_index(["state"])

    db.table("sources").create(
        {
            "path": str,
            "rule": str,
            "status": str,  # active | invalid | blocked | conflict | deleted
            "content_sha256": str,
            "request_hash": str,
            "image_count": int,
            "error": str,
            "updated_at": float,
        },
        pk="path",
        not_null=["status"],
    )
    db.table("sources").create_index(["request_hash"])

    db.table("outputs").create(
        {
            "id": int,
            "path": str,
            "job_id": int,
            "generation": int,
            "source_path": str,
            "sha256": str,
            "format": str,
            "written_at": float,
            "superseded": int,
        },
        pk="id",
        not_null=["path", "job_id", "sha256"],
        defaults={"superseded": 0, "generation": 0},
    )
    db.table("outputs").create_index(["path"], unique=True)
    db.table("outputs").create_index(["job_id"])
    db.table("outputs").create_index(["source_path"])

    db.table("uploads").create(
        {"sha256": str, "url": str, "upload_id": str, "response_json": str, "uploaded_at": float},
        pk="sha256",
    )

    db.table("job_events").create(
        {"id": int, "job_id": int, "at": float, "from_state": str, "to_state": str, "detail": str},
        pk="id",
    )
    db.table("job_events").create_index(["job_id"])


def _m002_leases(db: Database) -> None:
    # Claims on jobs (see ledger.base). One host per SQLite ledger, but the same interface and
    # the same rules as the shared PostgreSQL ledger.
    db.table("leases").create(
        {"job_id": int, "host": str, "expires": float, "claimed_at": float},
        pk="job_id",
        not_null=["host", "expires"],
    )
    db.table("leases").create_index(["host"])


def _m003_hosts(db: Database) -> None:
    # PostgreSQL only (which folder each rule is on each host); recorded here too, so both
    # backends keep one migration history.
    del db


def _m004_business_ids(db: Database) -> None:
    # The client_business_id each submission attempt carries (recorded with the intent), and
    # per API address the proof that lookups by it work: a task we created, found by its id.
    db.table("jobs").add_column("business_id", str)
    db.table("api_proofs").create(
        {"base_url": str, "task_id": str, "business_id": str, "proven_at": float},
        pk="base_url",
    )


def _m005_pauses(db: Database) -> None:
    # `promptdrop pause`: one row per paused rule ("*": every rule), kept across restarts.
    db.table("pauses").create({"rule": str, "since": float}, pk="rule", not_null=["since"])


MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = [
    ("001_initial", _m001_initial),
    ("002_leases", _m002_leases),
    ("003_hosts", _m003_hosts),
    ("004_business_ids", _m004_business_ids),
    ("005_pauses", _m005_pauses),
]


def migrate(db: Database) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    applied = []
    for name, step in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        # Read under the write lock: another process may have migrated while we waited.
        if list(db.query("SELECT name FROM migrations WHERE name = ?", [name])):
            db.execute("COMMIT")
            continue
        try:
            step(db)
            db.execute(
                "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", [name, time.time()]
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
