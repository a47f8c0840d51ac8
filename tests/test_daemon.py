"""End-to-end tests of `promptdrop watch`: the real daemon as a subprocess, a real watched
folder, a real ledger file and the emulator over TCP on 127.0.0.1.

Every assertion is about what a user or the API account would see: the emulator's record of
created (paid) tasks, the files in the folder, `promptdrop status --json`, exit codes and logs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness import (
    CANARY,
    SECRET_FORMS,
    Daemon,
    cli,
    daemon_env,
    image_for,
    key_file,
    rules_file,
    spawn,
    wait_for,
    write_prompt,
)
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.emulator.faults import Faults

SETTLE = 0.3
PIXELS = {"1:1": (1024, 1024), "16:9": (1792, 1024), "9:16": (1024, 1792)}


def pixel_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole image, not just the header
        return im.size


def pixels(path: Path) -> bytes:
    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


@dataclass
class Setup:
    """One watched folder, one state directory, one emulator, and the daemons started on them."""

    tmp: Path
    emu: Emulator
    folder: Path
    state: Path
    daemons: list[Daemon] = field(default_factory=list)

    def start(
        self, *, settle: float = SETTLE, state: Path | None = None, ready: bool = True
    ) -> Daemon:
        """Start `promptdrop watch --rules ...` and (with ready) wait until it watches."""
        # svip: the largest documented rate limits, so 50 files are not held at 5 per second.
        rules = rules_file(
            self.tmp / f"rules-{settle}.toml",
            self.folder,
            settle=settle,
            max_in_flight=16,
            account_group="svip",
        )
        daemon = spawn(
            rules,
            state or self.state,
            daemon_env(self.emu.base_url),
            cwd=self.tmp,
            name=f"daemon{len(self.daemons)}",
        )
        self.daemons.append(daemon)
        return daemon.wait_watching(timeout=20) if ready else daemon

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another promptdrop command to completion with the same environment."""
        return cli(*args, env=daemon_env(self.emu.base_url), cwd=self.tmp)

    def once(
        self, folder: Path | None = None, state: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "watch",
            "--once",
            str(folder or self.folder),
            "--state-dir",
            str(state or self.state),
            "--poll-interval",
            "0.1",
            "--log-format",
            "json",
        )

    def status(self, state: Path | None = None) -> dict[str, Any]:
        done = self.cli("status", "--json", "--state-dir", str(state or self.state))
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.status()["jobs"]
        return jobs

    def prompts(self) -> list[str]:
        """The prompt of every task the emulator created (every paid submission)."""
        return [s["prompt"] for s in self.emu.stats()["submissions"]]

    def drop(
        self, name: str, prompt: str, *, size: str | None = None, folder: Path | None = None
    ) -> Path:
        return write_prompt((folder or self.folder) / name, prompt, size)

    def image(self, source: Path, daemon: Daemon | None = None, timeout: float = 20.0) -> Path:
        found = wait_for(
            lambda: image_for(source), f"an image for {source.name}", timeout=timeout, daemon=daemon
        )
        assert found is not None
        return found

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.terminate()


def _make_setup(tmp_path: Path, emu: Emulator) -> Iterator[Setup]:
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    s = Setup(tmp=tmp_path, emu=emu, folder=folder, state=state)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[Setup]:
    """A fast emulator (0.2 s per task) that only accepts the canary key."""
    with Emulator(EmulatorConfig(api_key=CANARY, latency=0.2, jitter=0.0, rate_limits=None)) as emu:
        yield from _make_setup(tmp_path, emu)


@pytest.fixture
def slow_pd(tmp_path: Path) -> Iterator[Setup]:
    """An emulator whose tasks take 3 s, so the daemon can be stopped while one runs."""
    with Emulator(EmulatorConfig(api_key=CANARY, latency=3.0, jitter=0.0, rate_limits=None)) as emu:
        yield from _make_setup(tmp_path, emu)


def _running_job(pd: Setup) -> dict[str, Any] | None:
    jobs = pd.jobs()
    return jobs[0] if len(jobs) == 1 and jobs[0]["state"] == "running" else None


# ---------------------------------------------------------------------------------- tests


def test_a_dropped_file_becomes_an_image_of_the_requested_size(pd: Setup) -> None:
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox", size="16:9")
    image = pd.image(source, daemon)
    assert image.name in ("poster.png", "poster.jpg")
    assert pixel_size(image) == PIXELS["16:9"]
    subs = pd.emu.stats()["submissions"]
    assert [(s["prompt"], s["size"]) for s in subs] == [("a red fox", "16:9")]
    jobs = pd.jobs()
    assert [(j["state"], j["outputs"]) for j in jobs] == [("done", [str(image)])]


def test_fifty_files_dropped_at_once_are_each_submitted_exactly_once(pd: Setup) -> None:
    daemon = pd.start()
    wanted = [f"a lighthouse number {i}" for i in range(50)]
    sources = [pd.drop(f"p{i:02d}.prompt.toml", p) for i, p in enumerate(wanted)]
    wait_for(lambda: all(image_for(s) for s in sources), "50 images", timeout=40, daemon=daemon)
    time.sleep(3 * SETTLE)  # a late duplicate would show up here
    assert Counter(pd.prompts()) == Counter(wanted)
    jobs = pd.jobs()
    assert len(jobs) == 50 and {j["state"] for j in jobs} == {"done"}


def test_touching_rewriting_renaming_and_moving_submit_nothing_new(pd: Setup) -> None:
    sub = pd.folder / "sub"
    sub.mkdir()
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    first = pd.image(source, daemon)
    assert pd.prompts() == ["a red fox"]

    os.utime(source)  # touch
    time.sleep(3 * SETTLE + 0.3)
    assert pd.prompts() == ["a red fox"]

    source.write_bytes(source.read_bytes())  # same bytes saved again
    time.sleep(3 * SETTLE + 0.3)
    assert pd.prompts() == ["a red fox"]

    renamed = source.rename(pd.folder / "renamed.prompt.toml")
    pd.image(renamed, daemon)
    assert pd.prompts() == ["a red fox"]

    moved = renamed.rename(sub / "renamed.prompt.toml")
    copy = pd.image(moved, daemon)
    time.sleep(3 * SETTLE)
    assert pd.prompts() == ["a red fox"]
    assert pixels(copy) == pixels(first)


def test_an_edit_submits_once_and_keeps_the_earlier_image_as_v1(pd: Setup) -> None:
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    image = pd.image(source, daemon)
    before = image.read_bytes()

    pd.drop("poster.prompt.toml", "a blue whale in a deep ocean")
    kept = image.with_name("poster.v1" + image.suffix)
    wait_for(kept.exists, "the earlier image to be kept as poster.v1", daemon=daemon)
    wait_for(lambda: image_for(source), "the new image under the plain name", daemon=daemon)
    time.sleep(2 * SETTLE)
    assert pd.prompts() == ["a red fox", "a blue whale in a deep ocean"]
    assert kept.read_bytes() == before
    new = image_for(source)
    assert new is not None and new.read_bytes() != before
    pixel_size(new)
    assert sorted(p.name for p in pd.folder.iterdir()) == sorted(
        ["poster.prompt.toml", kept.name, new.name]
    )


def test_a_copy_of_a_prompt_file_gets_the_image_without_paying(pd: Setup) -> None:
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox", size="9:16")
    original = pd.image(source, daemon)

    copy_source = pd.folder / "copy.prompt.toml"
    copy_source.write_bytes(source.read_bytes())
    copy = pd.image(copy_source, daemon)
    time.sleep(2 * SETTLE)
    assert pd.prompts() == ["a red fox"]
    assert pixel_size(copy) == PIXELS["9:16"]
    assert pixels(copy) == pixels(original)


def test_a_file_written_slowly_is_submitted_once_after_it_settles(pd: Setup) -> None:
    settle = 0.8
    daemon = pd.start(settle=settle)
    source = pd.folder / "slow.prompt.toml"
    # Every prefix is invalid TOML (an unterminated string) until the last write.
    chunks = ['prompt = "a ', "slowly written ", "fox in ", 'the snow"\n', 'size = "1:1"\n']
    for i, chunk in enumerate(chunks):
        if i:
            time.sleep(0.3)
        with source.open("a", encoding="utf-8") as f:
            f.write(chunk)
    finished = time.time()
    pd.image(source, daemon)
    time.sleep(2 * settle)
    subs = pd.emu.stats()["submissions"]
    assert [s["prompt"] for s in subs] == ["a slowly written fox in the snow"]
    assert subs[0]["at"] >= finished
    assert not (pd.folder / "slow.error.txt").exists()


def test_a_daemon_killed_mid_task_finishes_it_after_restart_without_paying_again(
    slow_pd: Setup,
) -> None:
    pd = slow_pd
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    wait_for(pd.prompts, "the emulator to receive the submission", daemon=daemon)
    # The ledger must have recorded the task id: a kill before that is an ambiguous
    # submission, which by design is not resumed.
    wait_for(lambda: _running_job(pd), "the job to be running in the ledger", daemon=daemon)
    daemon.kill()
    assert image_for(source) is None

    again = pd.start()
    image = pd.image(source, again)
    pixel_size(image)
    assert pd.prompts() == ["a red fox"]
    jobs = pd.jobs()
    assert [(j["state"], j["attempts"]) for j in jobs] == [("done", 1)]


def test_a_foreign_file_under_the_image_name_blocks_the_prompt_and_stays_untouched(
    pd: Setup,
) -> None:
    foreign = pd.folder / "poster.png"
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "PNG")
    foreign.write_bytes(buf.getvalue())
    before = foreign.read_bytes()

    daemon = pd.start()
    pd.drop("poster.prompt.toml", "a red fox")
    note = pd.folder / "poster.error.txt"
    wait_for(note.exists, "an error note", daemon=daemon)
    time.sleep(2 * SETTLE)
    assert pd.prompts() == []
    assert foreign.read_bytes() == before
    text = note.read_text(encoding="utf-8")
    assert "poster.png" in text and "What to do" in text
    assert sorted(p.name for p in pd.folder.iterdir()) == [
        "poster.error.txt",
        "poster.png",
        "poster.prompt.toml",
    ]
    refused = pd.status()["refused_files"]
    assert [(r["path"], r["status"]) for r in refused] == [
        (str(pd.folder / "poster.prompt.toml"), "blocked")
    ]


def test_watch_once_exits_0_when_every_image_is_made(pd: Setup) -> None:
    a = pd.drop("a.prompt.toml", "a red fox")
    b = pd.drop("b.prompt.toml", "a green frog")
    done = pd.once()
    assert done.returncode == 0, done.stderr
    assert image_for(a) is not None and image_for(b) is not None
    assert sorted(pd.prompts()) == ["a green frog", "a red fox"]


def test_watch_once_exits_1_when_a_prompt_file_is_invalid(pd: Setup) -> None:
    good = pd.drop("good.prompt.toml", "a red fox")
    bad = pd.folder / "bad.prompt.toml"
    bad.write_text('prompt = "never closed\n', encoding="utf-8")
    done = pd.once()
    assert done.returncode == 1, done.stderr
    assert (pd.folder / "bad.error.txt").exists()
    assert image_for(good) is not None and image_for(bad) is None
    assert pd.prompts() == ["a red fox"]


def test_retry_turns_a_failed_job_into_a_done_one_on_the_next_once_run(pd: Setup) -> None:
    source = pd.drop("poster.prompt.toml", "a red fox")
    pd.emu.set_faults(Faults(task_failed=1.0))
    first = pd.once()
    assert first.returncode == 1, first.stderr
    assert image_for(source) is None
    assert (pd.folder / "poster.error.txt").exists()
    assert [j["state"] for j in pd.jobs()] == ["failed"]

    pd.emu.set_faults(Faults())
    unchanged = pd.once()  # without retry, a failed job is not paid for again
    assert unchanged.returncode == 1, unchanged.stderr
    assert pd.prompts() == ["a red fox"]

    retried = pd.cli("retry", str(source), "--state-dir", str(pd.state))
    assert retried.returncode == 0, retried.stderr
    second = pd.once()
    assert second.returncode == 0, second.stderr
    assert image_for(source) is not None
    assert not (pd.folder / "poster.error.txt").exists()
    assert pd.prompts() == ["a red fox", "a red fox"]
    assert [j["state"] for j in pd.jobs()] == ["done"]


def test_an_invalid_file_gets_a_note_costs_nothing_and_the_daemon_keeps_working(pd: Setup) -> None:
    daemon = pd.start()
    pd.drop("bad.prompt.toml", "a red fox", size="5:7")
    note = pd.folder / "bad.error.txt"
    wait_for(note.exists, "an error note for the invalid file", daemon=daemon)
    assert "size" in note.read_text(encoding="utf-8")
    time.sleep(2 * SETTLE)
    assert pd.prompts() == []

    good = pd.drop("good.prompt.toml", "a green frog")
    pd.image(good, daemon)
    assert pd.prompts() == ["a green frog"]
    assert daemon.proc.poll() is None
    assert note.exists()


def test_sigterm_stops_the_daemon_during_a_task_and_a_restart_finishes_it(slow_pd: Setup) -> None:
    pd = slow_pd
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    wait_for(lambda: _running_job(pd), "the job to be running", daemon=daemon)
    began = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    code = daemon.proc.wait(timeout=10)
    assert code == 0, daemon.log()
    assert time.monotonic() - began < 10
    assert image_for(source) is None
    assert [j["state"] for j in pd.jobs()] == ["running"]

    again = pd.start()
    pd.image(source, again)
    assert pd.prompts() == ["a red fox"]
    assert [(j["state"], j["attempts"]) for j in pd.jobs()] == [("done", 1)]


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(pd: Setup) -> None:
    first = pd.start()
    second = pd.start(ready=False)
    code = second.proc.wait(timeout=20)
    assert code != 0
    assert "state directory" in second.log()
    assert first.proc.poll() is None
    # The first one still works.
    source = pd.drop("poster.prompt.toml", "a red fox")
    pd.image(source, first)
    assert pd.prompts() == ["a red fox"]


def test_the_api_key_appears_in_no_log_file_ledger_or_status(pd: Setup) -> None:
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    pd.drop("bad.prompt.toml", "a red fox", size="5:7")
    pd.image(source, daemon)  # the emulator only accepts the canary: it was sent
    wait_for((pd.folder / "bad.error.txt").exists, "an error note", daemon=daemon)

    def state_files() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in pd.state.rglob("*") if p.is_file()}

    running = state_files()
    assert any(name.endswith("-wal") for name in running)  # the WAL is read too
    status = pd.cli("status", "--json", "--state-dir", str(pd.state))
    plain = pd.cli("status", "--state-dir", str(pd.state))
    assert daemon.terminate() == 0
    stopped = state_files()
    folder_files = {str(p): p.read_bytes() for p in pd.folder.rglob("*") if p.is_file()}
    logs = {str(d.stdout): d.stdout.read_bytes() for d in pd.daemons}
    logs |= {str(d.stderr): d.stderr.read_bytes() for d in pd.daemons}
    outputs = {
        "status --json": (status.stdout + status.stderr).encode(),
        "status": (plain.stdout + plain.stderr).encode(),
    }
    assert b"watching" in logs[str(daemon.stderr)]
    assert len(folder_files) == 4
    for where in (running, stopped, folder_files, logs, outputs):
        for name, data in where.items():
            for secret in SECRET_FORMS:
                assert secret not in data, f"the API key leaked into {name}"


def test_a_prompt_file_deleted_while_its_task_runs_gets_no_image(slow_pd: Setup) -> None:
    pd = slow_pd
    daemon = pd.start()
    source = pd.drop("poster.prompt.toml", "a red fox")
    wait_for(lambda: _running_job(pd), "the job to be running", daemon=daemon)
    source.unlink()
    job = wait_for(
        lambda: [j for j in pd.jobs() if j["state"] in ("done", "failed")],
        "the job to finish",
        daemon=daemon,
    )
    assert [(j["state"], j["outputs"]) for j in job] == [("done", [])]
    time.sleep(2 * SETTLE)
    assert list(pd.folder.iterdir()) == []
    assert pd.prompts() == ["a red fox"]


def test_a_key_given_in_a_file_is_used_and_that_file_alone_holds_it(pd: Setup) -> None:
    key = key_file(pd.tmp / "toapis-api-key")  # the session's canary scan skips this file only
    rules = rules_file(pd.tmp / "rules-keyfile.toml", pd.folder, settle=SETTLE)
    daemon = spawn(
        rules,
        pd.state,
        daemon_env(pd.emu.base_url, key=None),
        cwd=pd.tmp,
        name="keyfile",
        args=("--api-key-file", str(key)),
    )
    pd.daemons.append(daemon)
    daemon.wait_watching(timeout=20)
    source = pd.drop("poster.prompt.toml", "a red fox")
    pd.image(source, daemon)  # the emulator only accepts the canary: the file's key was sent
    assert pd.prompts() == ["a red fox"]


def test_the_stop_signal_only_sets_a_flag_and_the_earlier_handlers_come_back() -> None:
    """SIGTERM inside the phase sets the stop flag (nothing else runs); on leaving, the
    handlers installed before are in place again, SIGHUP's too."""
    from promptdrop.service.lifecycle import Flags, installed_signals

    def earlier(signum: int, frame: object) -> None:
        raise AssertionError("the daemon's handler should have taken this signal")

    before = {sig: signal.signal(sig, earlier) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:

        async def phase() -> tuple[bool, bool]:
            flags = Flags()
            with installed_signals(flags, reload=True):
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.wait_for(flags.stop.wait(), timeout=10)
                await asyncio.wait_for(flags.reload.wait(), timeout=10)
            return flags.stop.is_set(), flags.reload.is_set()

        assert asyncio.run(phase()) == (True, True)
        assert signal.getsignal(signal.SIGTERM) is earlier
        assert signal.getsignal(signal.SIGHUP) is earlier
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_missing_folder_named_on_the_command_line_is_a_config_error(tmp_path: Path) -> None:
    """A rules file's missing folder is waited for (see test_cli_hostile.py); one named on the
    command line is most likely a typo, and --once has nothing to wait for."""
    from promptdrop.service.config import ConfigError
    from promptdrop.service.lifecycle import require_folders
    from promptdrop.spec import rules_for_folders

    there = tmp_path / "there"
    there.mkdir()
    rules = rules_for_folders([there, tmp_path / "gone"]).rules
    with pytest.raises(ConfigError, match=r"the folder .*gone does not exist: check its name"):
        asyncio.run(require_folders(rules))
    with pytest.raises(ConfigError, match=r"gone does not exist \(rule 'gone'\): --once"):
        asyncio.run(require_folders(rules, from_rules_file=True, once=True))
    asyncio.run(require_folders(rules, from_rules_file=True))  # waited for
    asyncio.run(require_folders(rules[:1]))  # an existing folder alone is fine
