"""`promptdrop history`: every paid task read from a real SQLite ledger whose jobs were moved by
the engine's own table (jobs.table) through real guarded transitions, row by row; its totals
agree with the ledger's own spending counts; the command over a subprocess."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pgserver
from harness import cli, daemon_env
from promptdrop.api import TaskState
from promptdrop.commands.history import (
    history_rows,
    parse_since,
    select,
    task_line,
    totals,
)
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.jobs.table import Effect, lookup
from promptdrop.ledger import LEDGER_NAME, Job, JobState, Ledger, LedgerBase
from promptdrop.ledger.postgres import PostgresLedger

pg_server = pgserver.pg_server  # the fixtures, for the shared ledger's test
pg_url = pgserver.pg_url

S = JobState
K = Kind
FLASH = "gemini-2.5-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
PRICES = {FLASH: {"1K": 8.0}, PRO: {"1K": 24.0, "4K": 48.0}}
DAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()


class Clock:
    """An injected clock: each reading is one minute after the previous one."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 60.0
        return self.now


def _task(task_id: str) -> TaskState:
    return TaskState(task_id, "running", "queued", None, None, None, None, {"id": task_id})


def drive(ledger: LedgerBase, job: Job, steps: Sequence[Kind | tuple[Kind, str]]) -> Job:
    """Move `job` as the engine would for each outcome: the table's next state and its ledger
    note, the intent counted where the row counts one, the task id recorded where it records
    one. A step is a Kind, or (Kind, task id) for answers naming a task."""
    for step in steps:
        kind, task_id = step if isinstance(step, tuple) else (step, "")
        outcome = Outcome(kind, message="said so", task=_task(task_id) if task_id else None)
        row = lookup(job.state, kind)
        fields: dict[str, Any] = {}
        if row.effects & Effect.RECORD_TASK:
            fields["task_id"] = task_id
        job = ledger.transition(
            job.id,
            job.state,
            row.next_state,
            detail=row.detail(outcome),
            count_attempt=bool(row.effects & Effect.COUNT_INTENT),
            **fields,
        )
    return job


def retry(ledger: LedgerBase, job: Job) -> Job:
    """`promptdrop retry` (with --force for a done job): a final job back to PENDING."""
    return ledger.transition(job.id, job.state, S.PENDING, detail="promptdrop retry --force")


def new_job(
    ledger: LedgerBase, folder: Path, name: str, *, model: str = FLASH, resolution: str = "1K"
) -> Job:
    request = {"model": model, "prompt": name, "size": "16:9", "resolution": resolution}
    (job,) = ledger.take_up(
        folder / f"{name}.prompt.toml",
        rule="drop",
        content_sha256=name,
        request_hash=f"hash-{name}",
        image_count=1,
        request=request,
    )
    return job


def write_image(ledger: LedgerBase, job: Job, path: Path) -> None:
    path.write_bytes(b"image")
    source = path.with_name(path.name.split(".")[0].split("-v")[0] + ".prompt.toml")
    ledger.record_output(path, job=job, source_path=source, sha256="sha", fmt="png")


DONE_STEPS: list[Kind | tuple[Kind, str]] = [K.READY, (K.CREATED, "t-1"), K.TASK_DONE, K.WRITTEN]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / LEDGER_NAME, clock=Clock(DAY))


# --- one job's history, row by row ------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(DONE_STEPS, [("done", "t-1")], id="made"),
        pytest.param([K.READY, (K.CREATED, "t-1")], [("running", "t-1")], id="still running"),
        pytest.param(
            [K.READY, (K.CREATED, "t-1"), K.TASK_FAILED], [("failed", "t-1")], id="task failed"
        ),
        pytest.param([K.READY, K.REJECTED], [("refunded", None)], id="refused request"),
        pytest.param(
            [K.READY, K.RATE_LIMITED, *DONE_STEPS],
            [("refunded", None), ("done", "t-1")],
            id="rate limited, then made",
        ),
        pytest.param([K.READY, K.UNAUTHORIZED], [("refunded", None)], id="key refused"),
        pytest.param([K.READY, K.LOST_ANSWER], [("ambiguous", None)], id="answer lost"),
        pytest.param([K.READY, K.INTERRUPTED], [("ambiguous", None)], id="crash mid-submit"),
        pytest.param(
            [K.READY, K.LOST_ANSWER, (K.LOOKUP_FOUND, "t-9"), K.TASK_DONE, K.WRITTEN],
            [("done", "t-9")],
            id="lost answer found by business id",
        ),
        pytest.param(
            [K.READY, K.LOST_ANSWER, K.NOT_CREATED, *DONE_STEPS],
            [("ambiguous", None), ("done", "t-1")],
            id="lost answer never created, sent again",
        ),
        pytest.param(
            [K.UPLOAD_NEEDED, K.READY, (K.CREATED, "t-1"), K.TASK_DONE, K.WRITTEN],
            [("done", "t-1")],
            id="uploads first",
        ),
        pytest.param([K.BUDGET_SPENT], [], id="held by the budget: nothing paid"),
        pytest.param(
            [K.READY, (K.CREATED, "t-1"), K.TASK_DONE, K.DOWNLOAD_FAILED, K.TASK_DONE, K.WRITTEN],
            [("done", "t-1")],
            id="download failed once",
        ),
    ],
)
def test_each_paid_submission_is_one_task_with_its_outcome(
    ledger: Ledger,
    tmp_path: Path,
    steps: list[Kind | tuple[Kind, str]],
    expected: list[tuple[str, str | None]],
) -> None:
    drive(ledger, new_job(ledger, tmp_path, "poster"), steps)
    rows = select(history_rows(ledger, prices=None, tz=UTC), since=None, folders=[])
    assert [(r.state, r.task_id) for r in reversed(rows)] == expected
    assert all(r.rule == "drop" and r.model == FLASH and r.size == "16:9" for r in rows)


def test_a_retried_job_lists_both_tasks_each_with_its_own_image(
    ledger: Ledger, tmp_path: Path
) -> None:
    job = drive(ledger, new_job(ledger, tmp_path, "poster"), DONE_STEPS)
    write_image(ledger, job, tmp_path / "poster.png")
    ledger.move_output(tmp_path / "poster.png", tmp_path / "poster-v1.png")
    (tmp_path / "poster.png").rename(tmp_path / "poster-v1.png")
    job = retry(ledger, job)
    job = drive(ledger, job, [K.READY, (K.CREATED, "t-2"), K.TASK_DONE, K.WRITTEN])
    write_image(ledger, job, tmp_path / "poster.png")
    rows = select(history_rows(ledger, prices=None, tz=UTC), since=None, folders=[])
    assert [(r.task_id, [Path(p).name for p in r.images]) for r in rows] == [
        ("t-2", ["poster.png"]),
        ("t-1", ["poster-v1.png"]),
    ]
    assert rows[0].prompt_files == [str(tmp_path / "poster.prompt.toml")]


def test_an_image_deleted_since_is_not_listed_among_the_images_now(
    ledger: Ledger, tmp_path: Path
) -> None:
    job = drive(ledger, new_job(ledger, tmp_path, "poster"), DONE_STEPS)
    write_image(ledger, job, tmp_path / "poster.png")
    (tmp_path / "poster.png").unlink()
    (row,) = history_rows(ledger, prices=None, tz=UTC)
    assert row.images == []
    assert row.state == "done"


def test_a_job_adopted_from_the_folder_paid_nothing_and_is_not_listed(
    ledger: Ledger, tmp_path: Path
) -> None:
    drive(ledger, new_job(ledger, tmp_path, "poster"), [(K.ADOPTED, "t-old")])
    assert history_rows(ledger, prices=None) == []


# --- totals -----------------------------------------------------------------------------------


def _mixed(ledger: LedgerBase, tmp_path: Path) -> None:
    drive(ledger, new_job(ledger, tmp_path, "a"), DONE_STEPS)
    drive(ledger, new_job(ledger, tmp_path, "b"), [K.READY, K.REJECTED])
    drive(ledger, new_job(ledger, tmp_path, "c", model=PRO, resolution="4K"), DONE_STEPS)
    drive(ledger, new_job(ledger, tmp_path, "d"), [K.READY, K.LOST_ANSWER])
    drive(ledger, new_job(ledger, tmp_path, "e"), [K.READY, K.RATE_LIMITED, *DONE_STEPS])


def test_the_totals_agree_with_the_ledgers_own_spending_counts(
    ledger: Ledger, tmp_path: Path
) -> None:
    """What history calls paid is exactly what the budgets count: tasks and credits."""
    _mixed(ledger, tmp_path)
    rows = history_rows(ledger, prices=PRICES, tz=UTC)
    summed = totals(rows, priced=True)
    assert summed["all"]["tasks"] == ledger.spent_since(0.0) == 4
    assert summed["all"]["refunded"] == 2
    price = {FLASH: 8.0, PRO: 48.0}
    spent = ledger.credits_since(0.0, None, lambda r: price[r["model"]])
    assert summed["all"]["credits"] == spent == 8 + 48 + 8 + 8
    assert summed["rules"]["drop"]["states"] == {"ambiguous": 1, "done": 3, "refunded": 2}


def test_the_shared_ledger_gives_the_same_history(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL (`--ledger`): the same tasks, states and totals as SQLite."""
    with PostgresLedger(pg_url, clock=Clock(DAY)) as shared:
        _mixed(shared, tmp_path)
        rows = history_rows(shared, prices=PRICES, tz=UTC)
        assert totals(rows, priced=True)["all"]["tasks"] == shared.spent_since(0.0) == 4
    with Ledger(tmp_path / "local" / LEDGER_NAME, clock=Clock(DAY)) as local:
        _mixed(local, tmp_path)
        alike = history_rows(local, prices=PRICES, tz=UTC)
    assert [(r.state, r.task_id, r.credits) for r in select(rows, since=None, folders=[])] == [
        (r.state, r.task_id, r.credits) for r in select(alike, since=None, folders=[])
    ]


def test_totals_per_day_follow_the_local_date_of_each_submission(
    ledger: Ledger, tmp_path: Path
) -> None:
    clock = ledger._clock
    assert isinstance(clock, Clock)
    drive(ledger, new_job(ledger, tmp_path, "a"), DONE_STEPS)
    clock.now += 86400.0
    drive(ledger, new_job(ledger, tmp_path, "b"), DONE_STEPS)
    drive(ledger, new_job(ledger, tmp_path, "c"), [K.READY, K.REJECTED])
    summed = totals(history_rows(ledger, prices=PRICES, tz=UTC), priced=True)
    assert list(summed["days"]) == ["2026-12-02", "2026-12-01"]
    assert summed["days"]["2026-12-02"] == {
        "tasks": 1,
        "refunded": 1,
        "states": {"done": 1, "refunded": 1},
        "credits": 8.0,
        "unpriced": 0,
    }


def test_a_paid_task_without_a_price_is_counted_unpriced_never_free(
    ledger: Ledger, tmp_path: Path
) -> None:
    drive(ledger, new_job(ledger, tmp_path, "a", model=PRO, resolution="2K"), DONE_STEPS)
    summed = totals(history_rows(ledger, prices=PRICES, tz=UTC), priced=True)
    assert summed["all"]["unpriced"] == 1
    assert summed["all"]["credits"] == 0.0
    unpriced = totals(history_rows(ledger, prices=None, tz=UTC), priced=False)
    assert "credits" not in unpriced["all"]


def test_since_and_folders_select_the_tasks(ledger: Ledger, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    drive(ledger, new_job(ledger, tmp_path / "one", "a"), DONE_STEPS)
    cut = ledger._clock()
    drive(ledger, new_job(ledger, tmp_path / "two", "b"), DONE_STEPS)
    rows = history_rows(ledger, prices=None, tz=UTC)
    assert [r.prompt_files for r in select(rows, since=cut, folders=[])] == [
        [str(tmp_path / "two" / "b.prompt.toml")]
    ]
    assert [r.task_id for r in select(rows, since=None, folders=[tmp_path / "one"])] == ["t-1"]
    assert len(select(rows, since=None, folders=[tmp_path])) == 2
    assert select(rows, since=None, folders=[tmp_path / "on"]) == []  # a prefix is not a folder
    line = task_line(rows[0])
    assert "done" in line and "task t-1" in line and "16:9" in line


# --- --since ----------------------------------------------------------------------------------

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("today", datetime(2026, 12, 4, tzinfo=UTC)),
        ("Yesterday", datetime(2026, 12, 3, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 27, 15, 30, tzinfo=UTC)),
        ("12h", datetime(2026, 12, 4, 3, 30, tzinfo=UTC)),
    ],
)
def test_since_reads_dates_and_ages(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW, UTC) == expected.timestamp()


@pytest.mark.parametrize("text", ["", "last week", "2026-13-01", "7 days", "-3d", "3x"])
def test_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="give a date"):
        parse_since(text, NOW, UTC)


# --- the command ------------------------------------------------------------------------------


def test_the_command_lists_tasks_and_totals_as_text_and_json(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger(state / LEDGER_NAME, clock=Clock(DAY)) as ledger:
        _mixed(ledger, tmp_path)
    rules = tmp_path / "prices.rules.toml"
    rules.write_text(
        f'[[rules]]\nname = "drop"\npath = "{tmp_path}"\n'
        f'[prices]\n"{FLASH}" = {{ "1K" = 8 }}\n"{PRO}" = {{ "4K" = 48 }}\n',
        encoding="utf-8",
    )
    env = daemon_env("http://127.0.0.1:9")
    args = ("history", "--state-dir", str(state), "--rules", str(rules))
    text = cli(*args, env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[2] == "done" and "e.prompt.toml" in lines[0]
    assert "refunded" in text.stdout and "ambiguous" in text.stdout
    assert "total: 4 tasks, 2 refunded, 72 credits" in lines
    listing = json.loads(cli(*args, "--json", env=env, cwd=tmp_path).stdout)
    assert set(listing) == {"tasks", "totals"}
    assert len(listing["tasks"]) == 6
    assert listing["totals"]["all"]["credits"] == 72.0
    assert [t["at"] for t in listing["tasks"]] == sorted(
        (t["at"] for t in listing["tasks"]), reverse=True
    )


def test_the_command_refuses_a_bad_since_in_one_line_and_a_missing_ledger(
    tmp_path: Path,
) -> None:
    env = daemon_env("http://127.0.0.1:9")
    state = tmp_path / "state"
    missing = cli("history", "--state-dir", str(state), env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no ledger yet" in missing.stderr
    assert not state.exists()  # history never creates a ledger
    Ledger(state / LEDGER_NAME).close()
    bad = cli("history", "--state-dir", str(state), "--since", "soon", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
    empty = cli("history", "--state-dir", str(state), env=env, cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (0, "no paid tasks\n")
