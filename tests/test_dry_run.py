"""`promptdrop watch --dry-run`: the plan of one pass, read from the folder and the ledger as the
daemon reads them, with no request to the API (the emulator over TCP sees none), no key, and
not a byte written to the folder or the ledger; and the plan's decisions row by row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import pgserver
from harness import (
    CANARY,
    cli,
    daemon_env,
    image_for,
    rules_file,
    spawn,
    wait_for,
    write_prompt,
)
from promptdrop.commands.dryrun import LedgerView, Plan, decide, plan
from promptdrop.emulator import Emulator
from promptdrop.jobs import notes
from promptdrop.ledger import Job, JobState
from promptdrop.spec import RuleConfig, SpecError, read_prompt_file

pg_server = pgserver.pg_server  # the fixtures, for the shared ledger's test
pg_url = pgserver.pg_url

S = JobState
EXAMPLES = Path(__file__).resolve().parents[1] / "rules" / "examples"
FLASH = "gemini-2.5-flash-image-preview"


def _job(state: JobState, *, error: str | None = None, business_id: str | None = None) -> Job:
    return Job(
        id=1,
        request_hash="h",
        image_index=1,
        rule="drop",
        state=state,
        generation=0,
        request={},
        attempts=0,
        task_id=None,
        result_url=None,
        expires_at=None,
        image_sha256=None,
        image_format=None,
        error=error,
        created_at=0.0,
        updated_at=0.0,
        business_id=business_id,
    )


@pytest.mark.parametrize(
    ("job", "resubmit", "adoptable", "expected"),
    [
        (None, False, False, Plan.SUBMIT),
        (None, False, True, Plan.ADOPT),
        (_job(S.PENDING), False, False, Plan.SUBMIT),
        (_job(S.PENDING), False, True, Plan.ADOPT),
        (_job(S.WAITING), False, False, Plan.SUBMIT),
        (_job(S.UPLOADING), False, False, Plan.SUBMIT),
        (_job(S.DONE), False, True, Plan.MADE),
        (_job(S.RUNNING), False, False, Plan.RUNNING),
        (_job(S.DOWNLOADING), False, False, Plan.RUNNING),
        (_job(S.SUBMITTING), False, False, Plan.LOOKUP),
        (_job(S.FAILED, error="the API could not make this image"), False, False, Plan.FAILED),
        (_job(S.FAILED, error=notes.ORPHANED), False, False, Plan.SUBMIT),
        (_job(S.AMBIGUOUS), False, False, Plan.AMBIGUOUS),
        (_job(S.AMBIGUOUS, business_id="b-1"), False, False, Plan.LOOKUP),
        (_job(S.AMBIGUOUS), True, False, Plan.RESEND),
    ],
)
def test_each_image_is_planned_as_the_engine_takes_it_up(
    job: Job | None, resubmit: bool, adoptable: bool, expected: Plan
) -> None:
    assert decide(job, resubmit_ambiguous=resubmit, adoptable=adoptable) is expected


def _rule(folder: Path, **extra: Any) -> RuleConfig:
    return RuleConfig(name="drop", path=folder, **extra)


def _read(path: Path, rule: RuleConfig) -> Any:
    try:
        return read_prompt_file(path, Path(rule.path), rule.defaults)
    except SpecError as exc:
        return exc


def test_a_request_asked_twice_is_one_task_and_the_budget_holds_the_rest(tmp_path: Path) -> None:
    rule = _rule(tmp_path, daily_budget=3)
    a = write_prompt(tmp_path / "a.prompt.toml", "a cat")
    b = write_prompt(tmp_path / "b.prompt.toml", "a cat")  # the same request
    c, bad = tmp_path / "c.prompt.toml", tmp_path / "d.prompt.toml"
    c.write_text('prompt = "a dog"\ncount = 3\n')
    bad.write_text('promt = "x"\n')
    view = LedgerView(spent_today=lambda _rule: 1)  # one task sent today already
    plans = plan(
        [(p, rule, _read(p, rule)) for p in (a, b, c, bad)],
        view,
        prices={FLASH: {"1K": 8}},
    )
    assert [p.images for p in plans] == [
        [Plan.SUBMIT],
        [Plan.COPY],
        [Plan.SUBMIT, Plan.WAIT, Plan.WAIT],
        [],
    ]
    assert [p.tasks for p in plans] == [1, 0, 1, 0]
    assert plans[0].price == 8.0
    assert plans[3].problems and "prompt" in plans[3].problems[0]


def test_daily_credits_let_what_fits_go_and_hold_what_has_no_price(tmp_path: Path) -> None:
    """As the engine's verdict: 20 credits left of 30 at 8 a task is two tasks; a model
    without a price is held while credits are counted (never sent unpriced)."""
    rule = _rule(tmp_path, daily_credits=30.0)
    many = tmp_path / "many.prompt.toml"
    many.write_text('prompt = "a dog"\ncount = 3\n')
    pro = tmp_path / "pro.prompt.toml"
    pro.write_text('prompt = "a cat"\nmodel = "gemini-3-pro-image-preview"\n')
    view = LedgerView(credits_today=lambda _rule: 10.0)
    found = [(p, rule, _read(p, rule)) for p in (many, pro)]
    plans = plan(found, view, prices={FLASH: {"1K": 8}})
    assert [p.images for p in plans] == [[Plan.SUBMIT, Plan.SUBMIT, Plan.WAIT], [Plan.HELD]]
    free = plan(found, LedgerView(), prices={FLASH: {"1K": 8}})
    assert [p.images for p in free] == [[Plan.SUBMIT] * 3, [Plan.HELD]]


def test_a_reference_goes_up_once_unless_the_ledger_has_it(tmp_path: Path) -> None:
    rule = _rule(tmp_path)
    shutil.copy(EXAMPLES / "sketch.png", tmp_path / "sketch.png")
    files = []
    for name, prompt in (("a", "one"), ("b", "two")):
        path = tmp_path / f"{name}.prompt.toml"
        path.write_text(f'prompt = "{prompt}"\nreferences = ["sketch.png"]\n')
        files.append((path, rule, _read(path, rule)))
    assert [len(p.uploads) for p in plan(files, LedgerView())] == [1, 0]
    cached = LedgerView(uploaded=lambda _sha: True)
    assert [len(p.uploads) for p in plan(files, cached)] == [0, 0]


# --- the command, end to end ----------------------------------------------------------------


def _snapshot(*folders: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under the folders: its mtime (ns), size and bytes."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                st = path.stat()
                found[str(path)] = (st.st_mtime_ns, st.st_size, path.read_bytes())
            else:
                found[str(path)] = (path.stat().st_mtime_ns, 0, b"")
    return found


def test_the_dry_run_sends_nothing_and_writes_nothing(emulator: Emulator, tmp_path: Path) -> None:
    drop, state = tmp_path / "drop", tmp_path / "state"
    drop.mkdir()
    write_prompt(drop / "made.prompt.toml", "made before")
    env = daemon_env(emulator.base_url)
    first = cli(
        "watch", "--once", str(drop), "--state-dir", str(state), "--poll-interval", "0.1",
        "--log-format", "json", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    # Then new files arrive: one new, one copy of the made one, one with a reference, one bad.
    write_prompt(drop / "new.prompt.toml", "a new one", size="16:9")
    shutil.copy(drop / "made.prompt.toml", drop / "copy.prompt.toml")
    shutil.copy(EXAMPLES / "sketch.png", drop / "sketch.png")
    (drop / "ref.prompt.toml").write_text(
        'prompt = "from the sketch"\nreferences = ["sketch.png"]\n'
    )
    (drop / "bad.prompt.toml").write_text('prompt = "x"\nsize = "99:1"\n')
    emulator.reset_stats()
    before = _snapshot(drop, state)
    no_key = daemon_env(emulator.base_url, key=None)
    args = ("watch", str(drop), "--state-dir", str(state), "--dry-run")
    done = cli(*args, env=no_key, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # one file is invalid
    lines = done.stdout.splitlines()
    by_file = {line.split(" ")[0]: line for line in lines if line.startswith("drop/")}
    assert "invalid" in by_file["drop/bad.prompt.toml:"]
    assert "1 task" in by_file["drop/new.prompt.toml"] and "16:9" in by_file["drop/new.prompt.toml"]
    assert "1 task, 1 upload" in by_file["drop/ref.prompt.toml"]
    assert "made already" in by_file["drop/copy.prompt.toml"]
    assert "made already" in by_file["drop/made.prompt.toml"]
    assert "99:1" in done.stdout
    assert "would submit 2 tasks for 2 files of 5, 1 upload; 1 file invalid" in lines
    assert "Traceback" not in done.stderr
    # Nothing asked of the API; not a byte, a name or a time changed in the folder or the state.
    assert emulator.stats()["responses_by_status"] == {}
    assert emulator.stats()["submissions"] == emulator.stats()["uploads"] == []
    assert _snapshot(drop, state) == before
    # All valid: exit 0.
    (drop / "bad.prompt.toml").unlink()
    assert cli(*args, env=no_key, cwd=tmp_path).returncode == 0
    assert emulator.stats()["responses_by_status"] == {}


def test_without_a_ledger_it_plans_a_first_run_and_creates_none(
    emulator: Emulator, tmp_path: Path
) -> None:
    drop, state = tmp_path / "drop", tmp_path / "state"
    drop.mkdir()
    write_prompt(drop / "a.prompt.toml", "one")
    (drop / "b.prompt.toml").write_text('prompt = "two"\ncount = 2\n')
    rules = tmp_path / "r.rules.toml"
    rules.write_text(
        f'[[rules]]\nname = "drop"\npath = "{drop}"\n[prices]\n"{FLASH}" = {{ "1K" = 8 }}\n'
    )
    before = _snapshot(drop)
    done = cli(
        "watch", "--rules", str(rules), "--state-dir", str(state), "--dry-run",
        env=daemon_env(emulator.base_url, key=None), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would submit 3 tasks for 2 files of 2, 0 uploads, 24 credits" in done.stdout
    assert "no ledger yet" in done.stdout
    assert not state.exists()
    assert _snapshot(drop) == before
    assert emulator.stats()["responses_by_status"] == {}


def test_a_closed_ledger_is_read_without_creating_files_beside_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A ledger closed cleanly has no write-ahead log: the dry run adds none."""
    drop, state = tmp_path / "drop", tmp_path / "state"
    drop.mkdir()
    write_prompt(drop / "a.prompt.toml", "one")
    env = daemon_env(emulator.base_url)
    once = cli("watch", "--once", str(drop), "--state-dir", str(state), env=env, cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    names = sorted(os.listdir(state))
    done = cli("watch", str(drop), "--state-dir", str(state), "--dry-run", env=env, cwd=tmp_path)
    assert done.returncode == 0
    assert "nothing to pay, 1 made already" in done.stdout
    assert sorted(os.listdir(state)) == names
    assert CANARY not in done.stdout + done.stderr


def test_wrong_input_is_one_line_and_never_a_traceback(tmp_path: Path) -> None:
    """A folder that is not there or is a file (exit 2), a ledger that is not one (exit 1)."""
    env = daemon_env("http://127.0.0.1:9", key=None)
    (tmp_path / "file").write_text("x")
    (tmp_path / "drop").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ledger.sqlite3").write_text("not a database")
    cases = [
        (("watch", "--dry-run", "nothere"), 2, "does not exist"),
        (("watch", "--dry-run", "file"), 2, "is not a folder"),
        (("watch", "--dry-run"), 2, "name a folder"),
        (("watch", "--dry-run", "--rules", "nothere.toml"), 2, "not found"),
        (("watch", "--dry-run", "drop", "--state-dir", str(broken)), 1, "cannot read the ledger"),
        (("watch", "--dry-run", "drop", "--ledger", "ftp://x"), 1, "PostgreSQL URL"),
        (("history", "--state-dir", str(broken)), 1, "cannot read the ledger"),
    ]
    for args, code, words in cases:
        done = cli(*args, env=env, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (code, ""), args
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_the_shared_ledger_is_read_only_and_a_fresh_one_is_not_created(
    emulator: Emulator, tmp_path: Path, pg_url: str
) -> None:
    """--ledger postgresql://…: a fresh schema stays empty; a used one is read, not written."""
    import psycopg

    drop = tmp_path / "drop"
    drop.mkdir()
    write_prompt(drop / "a.prompt.toml", "one")
    no_key = daemon_env(emulator.base_url, key=None)
    args = ("watch", str(drop), "--state-dir", str(tmp_path / "s"), "--ledger", pg_url)

    def tables() -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY 1"
            ).fetchall()

    fresh = cli(*args, "--dry-run", env=no_key, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "1 task" in fresh.stdout and "no ledger yet" in fresh.stdout
    assert tables() == []
    once = cli(*args, "--once", env=daemon_env(emulator.base_url), cwd=tmp_path)
    assert once.returncode == 0, once.stderr

    def contents() -> list[Any]:
        with psycopg.connect(pg_url) as conn:
            return [
                conn.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall() for (name,) in tables()
            ]

    before = contents()
    (drop / "b.prompt.toml").write_text('prompt = "two"\n')
    emulator.reset_stats()
    used = cli(*args, "--dry-run", env=no_key, cwd=tmp_path)
    assert used.returncode == 0, used.stdout + used.stderr
    assert "nothing to pay, 1 made already" in used.stdout
    assert "would submit 1 task for 1 file of 2" in used.stdout
    assert contents() == before
    assert emulator.stats()["responses_by_status"] == {}


def test_the_ledger_of_a_running_daemon_is_read_beside_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """With the daemon running (its write-ahead log open), the plan sees what it made."""
    drop, state = tmp_path / "drop", tmp_path / "state"
    drop.mkdir()
    source = write_prompt(drop / "a.prompt.toml", "one")
    rules = rules_file(tmp_path / "r.rules.toml", drop, settle=0.1)
    daemon = spawn(rules, state, daemon_env(emulator.base_url), cwd=tmp_path)
    try:
        daemon.wait_watching()
        wait_for(lambda: image_for(source), "the image", daemon=daemon)
        wait_for(lambda: os.path.exists(state / "ledger.sqlite3-wal"), "the log", daemon=daemon)
        emulator.reset_stats()
        names = sorted(os.listdir(state))
        args = ("watch", "--rules", str(rules), "--state-dir", str(state), "--dry-run")
        done = cli(*args, env=daemon_env(emulator.base_url, key=None), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "nothing to pay, 1 made already" in done.stdout
        assert sorted(os.listdir(state)) == names
        assert emulator.stats()["submissions"] == []
    finally:
        daemon.terminate()
