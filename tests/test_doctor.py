"""`promptdrop doctor`: the real command against the emulator, real folders and a real closed
port; the inotify arithmetic as a pure function."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import CANARY
from promptdrop.api import AccountBlocked, ApiError, RateLimited, TransientError
from promptdrop.commands.doctor import (
    INSTANCES_FIX,
    WATCHES_FIX,
    credits_text,
    inotify_check,
    refused,
    unreachable,
)
from promptdrop.emulator import Emulator, Faults
from promptdrop.service.config import ConfigError, key_source, resolve_api_key

SECRET = "sk-doctor-canary-0123456789abcdef"


def _env(base_url: str, key: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PROMPTDROP_STATE_DIR",
            "STATE_DIRECTORY",
            "CREDENTIALS_DIRECTORY",
            "TOAPIS_API_KEY",
        )
    }
    env["TOAPIS_BASE_URL"] = base_url
    if key is not None:
        env["TOAPIS_API_KEY"] = key
    return env


def _rules(tmp_path: Path, *folders: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(
        "".join(
            f'[[rules]]\nname = "r{i}"\npath = {json.dumps(str(f))}\n'
            for i, f in enumerate(folders)
        ),
        encoding="utf-8",
    )
    return path


def _doctor(
    env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "promptdrop", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _row(output: str, check: str) -> str:
    """One check's row, its wrapped result and fix lines joined back into one line each."""
    lines = output.splitlines()
    header = lines[0]
    at_result, at_fix = header.index("RESULT"), header.index("FIX")
    for n, line in enumerate(lines):
        if line[:at_result].strip() != check:
            continue
        result, fix = [line[at_result:at_fix].strip()], [line[at_fix:].strip()]
        for more in lines[n + 1 :]:
            if not more.strip() or more[:at_result].strip():
                break
            result.append(more[at_result:at_fix].strip())
            fix.append(more[at_fix:].strip())
        return " ".join(x for x in result if x) + "  " + " ".join(x for x in fix if x)
    raise AssertionError(f"no {check!r} row in:\n{output}")


def _read_only(folder: Path) -> tuple[str, ...]:
    """A command prefix under which `folder` cannot be written, even by root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    # Root ignores permission bits: mount the folder read-only in a private mount namespace
    # that lives only as long as the command.
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare: cannot make a read-only folder")
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}'"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("running as root without the right to mount: cannot make a read-only folder")
    return (
        unshare,
        "-m",
        "sh",
        "-c",
        f"mount --bind -o ro '{folder}' '{folder}' && exec \"$@\"",
        "sh",
    )


def test_a_healthy_setup_passes_every_check(emulator: Emulator, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "sub").mkdir(parents=True)
    done = _doctor(
        _env(emulator.base_url, CANARY),
        "--rules",
        str(_rules(tmp_path, drop)),
        "--state-dir",
        str(tmp_path / "state"),
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.splitlines()[0].split() == ["CHECK", "RESULT", "FIX"]
    assert "accepted" in _row(out, "API key") and "TOAPIS_API_KEY" in _row(out, "API key")
    assert "20,000 credits left" in _row(out, "API key")
    assert "reachable" in _row(out, "API")
    assert "ok:" in _row(out, "folder r0") and "writable" in _row(out, "folder r0")
    assert "inotify" in _row(out, "folder r0")
    assert "2 folders of" in _row(out, "inotify limits")
    assert "ok:" in _row(out, "state folder")
    assert "PROBLEM" not in out
    assert not any(p.name.startswith(".promptdrop-doctor") for p in drop.iterdir())


def test_a_broken_setup_names_each_problem_with_its_fix(emulator: Emulator, tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    locked = tmp_path / "locked"
    locked.mkdir()
    prefix = _read_only(locked)
    done = _doctor(
        _env(emulator.base_url, SECRET),
        "--rules",
        str(_rules(tmp_path, missing, locked)),
        "--state-dir",
        str(tmp_path / "state"),
        prefix=prefix,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    key = _row(out, "API key")
    assert "PROBLEM: rejected by the API" in key and "TOAPIS_API_KEY" in key
    assert "does not exist" in _row(out, "folder r0")
    assert f"mkdir -p '{missing}'" in _row(out, "folder r0")
    row = _row(out, "folder r1")
    assert "cannot be written to" in row and "ReadWritePaths=" in row
    assert "3 problems found" in out
    assert SECRET not in out + done.stderr


def test_an_unreachable_api_is_a_problem_with_a_fix(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    drop = tmp_path / "drop"
    drop.mkdir()
    done = _doctor(
        _env(f"http://127.0.0.1:{port}", SECRET), str(drop), "--state-dir", str(tmp_path / "state")
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    row = _row(out, "API")
    assert f"PROBLEM: cannot reach the API at http://127.0.0.1:{port}" in row
    assert "firewall" in row and "TOAPIS_BASE_URL" in row
    assert "not checked" in _row(out, "API key")
    assert SECRET not in out + done.stderr


def test_no_key_at_all_says_where_to_put_one(tmp_path: Path) -> None:
    done = _doctor(_env("http://127.0.0.1:9", None), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1
    row = _row(done.stdout, "API key")
    assert "none found" in row and "toapis-api-key" in row


def test_watch_limits_below_the_folder_count_are_a_problem() -> None:
    check = inotify_check(folders=1000, roots=1, max_watches=1000, max_instances=128)
    assert check.problem and check.fix == WATCHES_FIX
    assert "1000 folders to watch" in check.result


def test_too_few_inotify_instances_for_the_roots_are_a_problem() -> None:
    check = inotify_check(folders=10, roots=9, max_watches=8192, max_instances=8)
    assert check.problem and check.fix == INSTANCES_FIX


def test_limits_with_room_to_spare_are_fine() -> None:
    assert not inotify_check(folders=100, roots=2, max_watches=8192, max_instances=128).problem
    assert not inotify_check(folders=0, roots=0, max_watches=1, max_instances=1).problem


def _key_places(tmp_path: Path, file_key: str | None, credential: str | None) -> Path | None:
    """A key file (when file_key is given) and a credentials folder (when credential is)."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    if credential is not None:
        (creds / "toapis-api-key").write_text(credential + "\n", encoding="utf-8")
    if file_key is None:
        return None
    path = tmp_path / "key"
    path.write_text(file_key + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("file_key", "credential", "variable", "key", "source"),
    [
        ("from-file", "from-cred", "from-env", "from-file", "the file"),
        (None, "from-cred", "from-env", "from-cred", "the systemd credential 'toapis-api-key'"),
        (None, "", "from-env", "from-env", "TOAPIS_API_KEY"),
        (None, None, "", None, "TOAPIS_API_KEY"),
    ],
)
def test_the_key_comes_from_the_file_then_the_credential_then_the_variable(
    tmp_path: Path,
    file_key: str | None,
    credential: str | None,
    variable: str,
    key: str | None,
    source: str,
) -> None:
    """An empty credential is passed over; the source named never holds the key."""
    key_file = _key_places(tmp_path, file_key, credential)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials"), "TOAPIS_API_KEY": variable}
    assert resolve_api_key(key_file, environ) == key
    found = key_source(key_file, environ)
    assert found.startswith(source)
    assert key is None or key not in found


def test_an_empty_key_file_is_a_config_error_saying_it_is_empty(tmp_path: Path) -> None:
    """The file was named on purpose: another key (another account) is not used in its place."""
    empty = tmp_path / "key"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"the API key file .*key is empty"):
        resolve_api_key(empty, {"TOAPIS_API_KEY": "from-env"})


def test_an_unreadable_key_file_is_a_config_error_not_a_fallback(tmp_path: Path) -> None:
    environ = {"TOAPIS_API_KEY": "from-env"}
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        resolve_api_key(tmp_path / "no-such-key", environ)


@pytest.mark.parametrize(
    ("error", "key_result", "api_result"),
    [
        (
            AccountBlocked("no", "auth", 401),
            "rejected by the API (it answered HTTP 401)",
            "reachable",
        ),
        (
            AccountBlocked("no", "quota", 402),
            "accepted, but the account has no credit",
            "reachable",
        ),
        (TransientError("timed out. promptdrop will retry"), "not checked", "cannot reach"),
        (RateLimited("429 every time"), "not checked", "cannot reach"),
        (ApiError("HTML where JSON was expected"), "not checked", "answered unexpectedly"),
    ],
)
def test_each_failed_balance_call_names_what_is_wrong_with_key_or_api(
    error: ApiError, key_result: str, api_result: str
) -> None:
    where = "the API at http://127.0.0.1:9"
    rows = refused(error, where) if isinstance(error, AccountBlocked) else unreachable(error, where)
    key_row, api_row = rows
    assert (key_row.name, api_row.name) == ("API key", "API")
    assert key_row.result.startswith(key_result)
    assert api_result in api_row.result
    # Exactly one of the two rows is the problem to fix.
    assert key_row.problem != api_row.problem
    assert "promptdrop will" not in api_row.result


def _doctor_on(emulator: Emulator, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    drop = tmp_path / "drop"
    drop.mkdir()
    return _doctor(
        _env(emulator.base_url, CANARY), str(drop), "--state-dir", str(tmp_path / "state")
    )


def test_an_empty_account_is_a_problem_that_says_to_add_credit(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Today's API answers the balance even when nothing is left: that is not ready."""
    emulator.set_faults(Faults(quota_exhausted=True))
    done = _doctor_on(emulator, tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    row = _row(out, "API key")
    assert "PROBLEM: accepted, but the account is empty (0 credits left)" in row
    assert "add credit to the ToAPIs account" in row
    assert "reachable" in _row(out, "API") and "1 problem found" in out
    assert "Everything looks ready" not in out


def test_an_unlimited_quota_is_reported_as_unlimited(emulator: Emulator, tmp_path: Path) -> None:
    emulator.set_faults(Faults(unlimited_quota=True))
    done = _doctor_on(emulator, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    row = _row(done.stdout, "API key")
    assert "accepted, unlimited quota" in row and "PROBLEM" not in row


def test_a_balance_answered_success_false_fails_with_the_apis_reason(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_faults(Faults(balance_fails=True))
    done = _doctor_on(emulator, tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    row = _row(out, "API key")
    assert "PROBLEM: the API could not report this key's balance" in row
    assert "Failed to get token info: record not found" in row
    assert "still exists" in row
    assert "reachable" in _row(out, "API")


@pytest.mark.parametrize(
    ("credits", "text"),
    [
        (20000.0, "20,000 credits"),
        (1234, "1,234 credits"),
        (1.0, "1 credit"),
        (0.0, "0 credits"),
        (12.5, "12.5 credits"),
        (0.333333, "0.33 credits"),
    ],
)
def test_credits_are_written_as_people_read_them(credits: float, text: str) -> None:
    assert credits_text(credits) == text
