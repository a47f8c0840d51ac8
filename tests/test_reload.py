"""`promptdrop reload [--wait]`: the daemon found by its state folder's lock, SIGHUP, and (with
--wait) its acknowledgement: exit 0 once the new rules are in use, 1 with one line when they
were refused (the old ones stay), or when no daemon runs. The units' ExecReload= is this."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    Daemon,
    cli,
    daemon_env,
    image_for,
    rules_file,
    spawn,
    stop_all,
    wait_for,
    write_prompt,
)
from promptdrop.emulator import Emulator
from promptdrop.service.reloads import (
    ACK_NAME,
    ReloadError,
    ReloadOutcome,
    read_ack,
    request_reload,
    write_ack,
)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    stop_all(started)


def _start(tmp_path: Path, emulator: Emulator, daemons: list[Daemon]) -> tuple[Path, Path]:
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    rules = rules_file(tmp_path / "rules.toml", folder, settle=0.1)
    daemon = spawn(rules, state, daemon_env(emulator.base_url), cwd=tmp_path)
    daemons.append(daemon)
    daemon.wait_watching()
    return rules, state


def test_reload_wait_returns_once_the_new_rules_are_in_use(
    tmp_path: Path, emulator: Emulator, daemons: list[Daemon]
) -> None:
    rules, state = _start(tmp_path, emulator, daemons)
    second = tmp_path / "second"
    second.mkdir()
    rules.write_text(
        rules.read_text() + f'[[rules]]\nname = "second"\npath = "{second}"\nsettle = 0.1\n'
    )
    done = cli("reload", "--wait", "--state-dir", str(state), env=daemon_env(""), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("promptdrop reload: the new rules are in use: watching ")
    assert str(second) in done.stdout
    # Already applied when the command returned: the daemon's log says so.
    assert "rules reloaded" in daemons[0].log()
    source = write_prompt(second / "fox.prompt.toml", "a fox in the second folder")
    wait_for(lambda: image_for(source), "the new folder's image", daemon=daemons[0])


def test_a_refused_rules_file_fails_the_reload_in_one_line_and_the_old_rules_stay(
    tmp_path: Path, emulator: Emulator, daemons: list[Daemon]
) -> None:
    rules, state = _start(tmp_path, emulator, daemons)
    good = rules.read_text()
    rules.write_text(good.replace("path =", "paht ="))
    done = cli("reload", "--wait", "--state-dir", str(state), env=daemon_env(""), cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "promptdrop reload: the new rules were refused; the daemon keeps the rules it had: "
        "the rules file has errors: "
    )
    assert "paht" in lines[0]
    source = write_prompt(tmp_path / "drop" / "still.prompt.toml", "made by the old rules")
    wait_for(lambda: image_for(source), "an image by the rules kept", daemon=daemons[0])


def test_reload_without_a_daemon_says_so(tmp_path: Path) -> None:
    done = cli("reload", "--wait", "--state-dir", str(tmp_path), env=daemon_env(""), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"promptdrop reload: no promptdrop daemon is running with the state folder {tmp_path}\n"
    )


def test_an_answer_to_an_earlier_reload_is_not_taken_for_this_one(tmp_path: Path) -> None:
    """The acknowledgement counts only when its reload began after the signal was sent; a
    held lock with our own pid stands in for the daemon (SIGHUP ignored meanwhile)."""
    import fcntl
    import signal

    lock = os.open(tmp_path / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.write(lock, str(os.getpid()).encode())
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        old = ReloadOutcome(time.clock_gettime_ns(time.CLOCK_MONOTONIC), True, "old", os.getpid())
        write_ack(tmp_path, old)
        clock = iter(range(old.started_ns + 1, old.started_ns + 10**12, 10**9))
        answered: list[ReloadOutcome] = []

        def sleep(_seconds: float) -> None:
            # The "daemon" answers the new request on the second look.
            if not answered:
                new = ReloadOutcome(old.started_ns + 5, False, "bad rules", os.getpid())
                write_ack(tmp_path, new)
                answered.append(new)

        with pytest.raises(ReloadError, match="refused; the daemon keeps the rules it had: bad"):
            request_reload(tmp_path, timeout=60, sleep=sleep, clock=lambda: next(clock))
        assert answered
    finally:
        signal.signal(signal.SIGHUP, before)
        os.close(lock)


def test_the_acknowledgement_is_small_json_and_a_torn_one_reads_as_none(tmp_path: Path) -> None:
    outcome = ReloadOutcome(123, True, "watching /srv/drop", 42)
    write_ack(tmp_path, outcome)
    assert json.loads((tmp_path / ACK_NAME).read_text())["applied"] is True
    assert read_ack(tmp_path) == outcome
    assert (tmp_path / ACK_NAME).stat().st_mode & 0o777 == 0o600
    (tmp_path / ACK_NAME).write_text('{"started_ns": 1')
    assert read_ack(tmp_path) is None


def test_reloading_reports_the_reload_start_as_monotonic_usec(tmp_path: Path) -> None:
    """RELOADING=1 carries the same instant the acknowledgement does (systemd 253 and later
    match it against the time of their reload request)."""
    import socket

    from promptdrop.service.sdnotify import Notifier

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.reloading(7_654_321_987)
        lines = listener.recv(4096).decode().split("\n")
        notifier.close()
    assert lines[:2] == ["RELOADING=1", "MONOTONIC_USEC=7654321"]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "soon"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(
    tmp_path: Path, timeout: str
) -> None:
    done = cli("reload", "--wait", "--timeout", timeout, env=daemon_env(""), cwd=tmp_path)
    assert done.returncode == 2
    assert "argument --timeout: a number of seconds above 0" in done.stderr
    assert "Traceback" not in done.stderr
