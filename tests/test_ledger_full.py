"""A full disk under the ledger itself: the real daemon with its state directory on a small
tmpfs that the test fills up at a chosen moment of a job, then frees.

SQLite then answers "database or disk is full" (SQLITE_FULL) to the daemon's writes: the WAL
must grow for every new commit of a young ledger, and a full tmpfs has no page to give it.
What must hold: no partial image, no second payment, the daemon stays up (no crash loop) and
keeps what its ledger knew, and the work finishes once space returns.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from figures import record
from harness import (
    Daemon,
    daemon_env,
    fill,
    image_for,
    note_for,
    rules_file,
    small_tmpfs,
    spawn,
    wait_for,
    write_prompt,
)
from promptdrop.emulator import Emulator, Faults
from promptdrop.ledger import LEDGER_NAME
from promptdrop.outputs import TEMP_PREFIX

FULL_FOR = 2.5  # seconds the disk stays full once the job has met it
RECOVERY = 8.0  # seconds allowed for the work to finish once space returns


@dataclass
class Rig:
    folder: Path
    state: Path
    emu: Emulator
    daemon: Daemon

    def jobs(self) -> dict[str, tuple[str, int]]:
        """Prompt -> (state, paid attempts), read without writing (works on a full disk)."""
        db = sqlite3.connect(f"file:{self.state / LEDGER_NAME}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT json_extract(request_json, '$.prompt'), state, attempts FROM jobs"
            ).fetchall()
        finally:
            db.close()
        return {p: (s, a) for p, s, a in rows}

    def integrity(self) -> str:
        db = sqlite3.connect(f"file:{self.state / LEDGER_NAME}?mode=ro", uri=True, timeout=5)
        try:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            db.close()

    def paid(self, prompt: str) -> int:
        return sum(1 for s in self.emu.stats()["submissions"] if s["prompt"] == prompt)

    def errors(self) -> int:
        """Error lines the daemon logged (a failed ledger write is one, whatever its words)."""
        return sum(1 for e in self.daemon.events() if e.get("level") == "error")


@pytest.fixture
def rig(tmp_path: Path, emulator_factory: Callable[..., Emulator]) -> Iterator[Rig]:
    """A daemon whose 2 MiB state directory already holds a young ledger with one done job."""
    emu = emulator_factory(latency=1.0, jitter=0.0, rate_limits=None)
    folder = tmp_path / "drop"
    folder.mkdir()
    with small_tmpfs(tmp_path / "state", "2m") as state:
        rules = rules_file(tmp_path / "rules.toml", folder, settle=0.2)
        daemon = spawn(rules, state, daemon_env(emu.base_url), cwd=tmp_path)
        try:
            daemon.wait_watching()
            first = write_prompt(folder / "first.prompt.toml", "made before the disk filled")
            wait_for(lambda: image_for(first), "the first image", daemon=daemon)
            yield Rig(folder, state, emu, daemon)
        finally:
            daemon.terminate()


def _check_outcome(rig: Rig, source: Path, prompt: str, full_at: str) -> None:
    """While full nothing was written; after space returned the image came, paid once."""
    wait_for(
        lambda: image_for(source),
        f"the image once space returned ({full_at})",
        timeout=RECOVERY,
        daemon=rig.daemon,
    )
    # The image is written a moment before its job is committed done: wait for the ledger too.
    expected = {"made before the disk filled": ("done", 1), prompt: ("done", 1)}
    wait_for(lambda: rig.jobs() == expected, "both jobs done in the ledger", daemon=rig.daemon)
    assert rig.jobs() == expected
    assert rig.paid(prompt) == 1
    assert rig.integrity() == "ok"
    assert not note_for(source).exists()
    assert not [p for p in rig.folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert rig.daemon.proc.poll() is None
    record(
        "ledger_full",
        {
            "jobs_hit_by_a_full_ledger": 1,
            "duplicate_submissions": 0,
            "partial_images": 0,
            "daemon_exits": 0,
            f"errors_logged_{full_at}": rig.errors(),
        },
    )


def _full_until_freed(rig: Rig, source: Path, filler: Path) -> None:
    """Once a ledger write failed, keep the disk full for FULL_FOR seconds (no image appears,
    the daemon stays up), then free the space."""
    wait_for(rig.errors, "a ledger write to fail", daemon=rig.daemon)
    deadline = time.monotonic() + FULL_FOR
    while time.monotonic() < deadline:
        assert image_for(source) is None
        assert rig.daemon.proc.poll() is None, rig.daemon.log()[-4000:]
        time.sleep(0.1)
    filler.unlink()


def test_a_task_finishing_while_the_ledger_disk_is_full_is_fetched_once_space_returns(
    rig: Rig,
) -> None:
    prompt = "finished while the ledger could not be written"
    source = write_prompt(rig.folder / "late.prompt.toml", prompt)
    wait_for(
        lambda: rig.jobs().get(prompt, ("",))[0] == "running", "the job to run", daemon=rig.daemon
    )
    # The task completes remotely meanwhile; recording that fails, and nothing may be written.
    filler = fill(rig.state)
    _full_until_freed(rig, source, filler)
    assert rig.jobs()[prompt] == ("running", 1)  # as it was: nothing lost, nothing moved
    _check_outcome(rig, source, prompt, "while_running")


def test_a_submit_answer_arriving_while_the_ledger_disk_is_full_is_kept_not_lost(rig: Rig) -> None:
    prompt = "answered while the ledger could not be written"
    # The answer to the POST is held until the disk is full: recording the task id fails.
    rig.emu.set_faults(Faults(slow=1.0, slow_seconds=1.0, endpoints=("submit",)))
    source = write_prompt(rig.folder / "held.prompt.toml", prompt)
    wait_for(lambda: rig.paid(prompt), "the emulator to record the submission", daemon=rig.daemon)
    filler = fill(rig.state)
    rig.emu.set_faults(Faults())
    _full_until_freed(rig, source, filler)
    _check_outcome(rig, source, prompt, "at_the_submit_answer")


def test_a_prompt_file_dropped_while_the_ledger_disk_is_full_is_made_once_space_returns(
    rig: Rig,
) -> None:
    prompt = "dropped while the ledger could not be written"
    filler = fill(rig.state)
    source = write_prompt(rig.folder / "dropped.prompt.toml", prompt)
    _full_until_freed(rig, source, filler)
    assert rig.paid(prompt) == 0
    _check_outcome(rig, source, prompt, "at_take_up")
