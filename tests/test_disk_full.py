"""A full disk while the image is written: nothing partial, nothing paid twice, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from figures import record
from harness import CANARY, fill, small_tmpfs
from promptdrop.emulator import Emulator
from promptdrop.jobs.engine import EngineOptions
from promptdrop.ledger import LEDGER_NAME
from promptdrop.service.runner import WatchOptions, run
from promptdrop.spec import rules_for_folders


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small") as mnt:
        yield mnt


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A fast emulator that only accepts the canary key."""
    return emulator_factory(latency=0.05, jitter=0.0, rate_limits=None)


def _write_failures(state: Path) -> int:
    db = state / LEDGER_NAME
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM job_events WHERE detail LIKE 'write failed%'"
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0


def test_disk_full_while_writing_leaves_nothing_partial_and_recovers(
    small_fs: Path, tmp_path: Path, emulator: Emulator
) -> None:
    source = small_fs / "big.prompt.toml"
    source.write_text('prompt = "a picture that will not fit"\nsize = "16:9"\n')
    filler = fill(small_fs)
    with pytest.raises(OSError) as full:
        (small_fs / "probe").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC

    state = tmp_path / "state"
    opts = WatchOptions(
        rules=rules_for_folders([small_fs]),
        state_dir=state,
        api_key=CANARY,
        base_url=emulator.base_url,
        once=True,
        engine=EngineOptions(poll_first=0.05, poll_interval=0.05, retry_later=0.2),
    )
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(run(opts))))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while _write_failures(state) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _write_failures(state) >= 2, "the write never failed: is the disk really full?"
        # While the disk is full: no final image, no temporary file left behind.
        names = sorted(p.name for p in small_fs.iterdir())
        assert names == ["big.prompt.toml", "filler.bin", "probe"] or names == [
            "big.prompt.toml",
            "filler.bin",
        ]
        filler.unlink()  # space returns
    finally:
        runner.join(timeout=30)
    assert result == [0]
    with Image.open(small_fs / "big.png") as img:
        img.load()
        assert img.size == (1792, 1024)
    assert len(emulator.stats()["submissions"]) == 1
    assert not [p for p in small_fs.iterdir() if p.name.startswith(".promptdrop-tmp-")]
    record(
        "disk_full",
        {
            "failed_writes": _write_failures(state),
            "partial_images": 0,
            "submissions": len(emulator.stats()["submissions"]),
        },
    )
