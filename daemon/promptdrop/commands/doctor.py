"""`promptdrop doctor`: is this machine ready to run the daemon? A table of checks, with a fix
for every problem: the API key, the API, each watched folder, the inotify limits, the ledger's
folder. Exit 1 when any check found a problem, 0 otherwise. The key itself is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from promptdrop.api import (
    DEFAULT_BASE_URL,
    AccountBlocked,
    ApiError,
    RateLimited,
    RateLimits,
    RetryPolicy,
    ToApisClient,
    TransientError,
)
from promptdrop.service.runner import ConfigError, resolve_api_key
from promptdrop.spec import RuleConfig, RulesFile, SpecError, read_rules, rules_for_folders
from promptdrop.watch.fstypes import filesystem_type, is_network_fstype, should_poll

KEY_HELP = (
    "set TOAPIS_API_KEY, or pass --api-key-file FILE, or (under systemd) give the "
    "credential 'toapis-api-key' with LoadCredential="
)
DROP_IN = "/etc/systemd/system/promptdrop.service.d/roots.conf"
INOTIFY = Path("/proc/sys/fs/inotify")
WATCHES_FIX = (
    "sudo sysctl fs.inotify.max_user_watches=524288, and put "
    "'fs.inotify.max_user_watches=524288' in /etc/sysctl.d/90-promptdrop.conf "
    "to keep it after a reboot"
)
INSTANCES_FIX = (
    "sudo sysctl fs.inotify.max_user_instances=1024, and put "
    "'fs.inotify.max_user_instances=1024' in /etc/sysctl.d/90-promptdrop.conf "
    "to keep it after a reboot"
)


@dataclass(frozen=True)
class Check:
    """One line of the table: what was checked, what was found, and what to do (None: fine)."""

    name: str
    result: str
    fix: str | None = None

    @property
    def problem(self) -> bool:
        return self.fix is not None


# --- pure checks ------------------------------------------------------------------------------


def inotify_check(
    folders: int, roots: int, max_watches: int | None, max_instances: int | None
) -> Check:
    """Whether the kernel's inotify limits leave room for `folders` watched folders spread over
    `roots` roots watched with inotify (one watch per folder, one instance per root).

    Other programs of the same user need watches too, so more than 90% of the limit is a problem.
    """
    name = "inotify limits"
    if roots == 0:
        return Check(name, "not needed: every folder is polled")
    found = []
    fixes = []
    if max_watches is None:
        found.append("max_user_watches unknown")
    elif folders > max_watches * 0.9:
        found.append(
            f"{folders} folders to watch but the system allows {max_watches} "
            "(fs.inotify.max_user_watches): changes in some folders would be missed "
            "until the next full scan"
        )
        fixes.append(WATCHES_FIX)
    else:
        found.append(f"{folders} folders of {max_watches} allowed")
    if max_instances is None:
        found.append("max_user_instances unknown")
    elif roots > max_instances:
        found.append(
            f"{roots} watched folders need {roots} inotify instances but the system "
            f"allows {max_instances} (fs.inotify.max_user_instances)"
        )
        fixes.append(INSTANCES_FIX)
    else:
        found.append(f"{roots} of {max_instances} instances")
    return Check(name, "; ".join(found), "; ".join(fixes) if fixes else None)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _count_folders(root: Path) -> int:
    # inotify watches every folder below a recursive root, hidden ones included.
    return sum(1 for _ in os.walk(root))


def _try_write(folder: Path) -> str | None:
    """None if a file can be created in `folder` (and is removed again), else why not.

    A real write, not os.access: that says yes to root on a read-only mount."""
    probe = folder / f".promptdrop-doctor-{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def folder_check(rule: RuleConfig) -> tuple[Check, int]:
    """One watched folder: there, a folder, writable, its file system and how it is watched.
    Also returns how many folders inotify would watch for it (0 when polled or unusable)."""
    path = Path(rule.path)
    name = f"folder {rule.name}"
    if not path.exists():
        return Check(
            name,
            f"{path} does not exist",
            f"create it (mkdir -p '{path}'), or correct its path in the rules file",
        ), 0
    if not path.is_dir():
        return Check(name, f"{path} is not a folder", "point the rule at a folder, not a file"), 0
    fstype = filesystem_type(path) or "unknown file system"
    problem = _try_write(path)
    if problem is not None:
        return Check(
            name,
            f"{path} cannot be written to ({problem}); images and notes could not be saved",
            "give the user that runs promptdrop write permission on it, and check it is not "
            "mounted read-only; under systemd, list it in ReadWritePaths= in the drop-in "
            f"{DROP_IN} (see systemd/promptdrop.service.d/roots.conf.example)",
        ), 0
    network = is_network_fstype(fstype)
    if rule.poll == "never" and network:
        return Check(
            name,
            f'{path} is on {fstype}, a network or FUSE file system, but poll = "never": '
            "files saved by other computers would not be noticed",
            f'set poll = "auto" (or "always") for rule {rule.name!r} in the rules file',
        ), 0
    if should_poll(path, rule.poll):
        how = f"checked every {rule.poll_interval:g} s (polled)"
        folders = 0
    else:
        how = "changes seen at once (inotify)"
        folders = _count_folders(path) if rule.recursive else 1
    return Check(name, f"ok: {path}, writable, {fstype}, {how}"), folders


def state_check(state_dir: Path) -> Check:
    """The ledger's folder: on local disk and writable (or creatable)."""
    name = "state folder"
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(existing) or "unknown file system"
    if is_network_fstype(fstype):
        return Check(
            name,
            f"{state_dir} is on {fstype}, a network or FUSE file system; the ledger must "
            "be on local disk (SQLite locking is not safe on shares)",
            "choose a folder on a local disk with --state-dir or PROMPTDROP_STATE_DIR "
            "(under systemd, StateDirectory= does this)",
        )
    if not existing.is_dir():
        return Check(
            name,
            f"{existing} is not a folder",
            "choose another folder with --state-dir or PROMPTDROP_STATE_DIR",
        )
    problem = _try_write(existing)
    if problem is not None:
        return Check(
            name,
            f"{existing} cannot be written to ({problem})",
            "give the user that runs promptdrop write permission on it, or choose "
            "another folder with --state-dir or PROMPTDROP_STATE_DIR",
        )
    when = "" if existing == state_dir else " (created on the first start)"
    return Check(name, f"ok: {state_dir}{when}, {fstype}, local disk")


# --- the key and the API ----------------------------------------------------------------------


def _key_source(api_key_file: Path | None) -> str:
    if api_key_file is not None:
        return f"the file {api_key_file}"
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        try:
            if (Path(creds) / "toapis-api-key").read_text(encoding="utf-8").strip():
                return "the systemd credential 'toapis-api-key'"
        except OSError:
            pass
    return "TOAPIS_API_KEY"


async def api_checks(api_key: str, base_url: str, *, timeout: float = 10.0) -> list[Check]:
    """Ask the API for the balance (cheap, authenticated): is it reachable, is the key good?"""
    where = f"the API at {base_url}"
    try:
        client = ToApisClient(
            api_key,
            base_url,
            rate_limits=RateLimits.unlimited(),
            retry=RetryPolicy(attempts=2, base=0.3, cap=1.0),
            timeout=timeout,
            connect_timeout=min(5.0, timeout),
        )
    except ValueError as exc:
        return [Check("API key", str(exc), KEY_HELP)]
    async with client:
        try:
            answer = await client.balance()
        except AccountBlocked as exc:
            reach = Check("API", f"reachable: {where}")
            if exc.reason == "auth":
                return [
                    Check(
                        "API key",
                        f"rejected by the API (it answered HTTP {exc.status or '401'})",
                        "check the key was copied whole (get it again from the ToAPIs "
                        "console if needed), then " + KEY_HELP,
                    ),
                    reach,
                ]
            return [
                Check(
                    "API key",
                    "accepted, but the account has no credit left",
                    "add credit to the ToAPIs account",
                ),
                reach,
            ]
        except (TransientError, RateLimited) as exc:
            return [
                Check("API key", "not checked: the API could not be reached"),
                Check(
                    "API",
                    f"cannot reach {where}: " + exc.message.split(" promptdrop will")[0],
                    "check the network connection, firewall or proxy, and that "
                    "TOAPIS_BASE_URL (or base_url in the rules file) is right",
                ),
            ]
        except ApiError as exc:
            return [
                Check("API key", "not checked: the API gave an unexpected answer"),
                Check(
                    "API",
                    f"{where} answered unexpectedly: {exc.message}",
                    "check that TOAPIS_BASE_URL (or base_url in the rules file) is the "
                    "ToAPIs API's address",
                ),
            ]
    balance = answer.get("balance")
    extra = (
        f" (balance {balance} {answer.get('currency', '')})".rstrip() if balance is not None else ""
    )
    return [Check("API key", f"accepted{extra}"), Check("API", f"reachable: {where}")]


# --- the whole run ----------------------------------------------------------------------------


def load_rules(rules_path: Path | None, folders: Sequence[Path]) -> RulesFile | None:
    """The rules as `watch` would build them; None when neither was given. Raises SpecError."""
    if rules_path is not None:
        return read_rules(rules_path)
    if folders:
        return rules_for_folders(list(folders))
    return None


def diagnose(
    rules_path: Path | None, folders: Sequence[Path], state_dir: Path, api_key_file: Path | None
) -> list[Check]:
    """Run every check; never raises for a problem it can describe."""
    checks: list[Check] = []
    rules: RulesFile | None = None
    try:
        rules = load_rules(rules_path, folders)
    except SpecError as exc:
        checks.append(
            Check(
                "rules file",
                f"has errors: {exc}",
                f"fix the rules file (promptdrop check {rules_path} lists each problem)",
            )
        )
    else:
        if rules is None:
            checks.append(
                Check(
                    "rules file",
                    "none given: the watched folders are not checked "
                    "(pass the same FOLDER… or --rules FILE as to watch)",
                )
            )
        else:
            what = str(rules_path) if rules_path is not None else "folders from the command line"
            checks.append(
                Check(
                    "rules file",
                    f"ok: {what}, {len(rules.rules)} watched "
                    f"folder{'s' if len(rules.rules) != 1 else ''}",
                )
            )
    base_url = (
        os.environ.get("TOAPIS_BASE_URL")
        or (rules.api.base_url if rules is not None else None)
        or DEFAULT_BASE_URL
    )
    try:
        key = resolve_api_key(api_key_file)
    except ConfigError as exc:
        checks.append(Check("API key", str(exc), "make the file readable, or " + KEY_HELP))
        key = None
    else:
        if not key:
            checks.append(Check("API key", "none found", KEY_HELP))
    if key:
        found = asyncio.run(api_checks(key, base_url))
        key_row = found[0]
        if not key_row.problem and not key_row.result.startswith("not checked"):
            found[0] = Check(key_row.name, f"{key_row.result}, from {_key_source(api_key_file)}")
        checks.extend(found)
    else:
        checks.append(Check("API", f"not checked: no usable API key ({base_url})"))
    if rules is not None:
        folders_total = 0
        inotify_roots = 0
        for rule in rules.rules:
            check, n = folder_check(rule)
            checks.append(check)
            if n:
                folders_total += n
                inotify_roots += 1
        checks.append(
            inotify_check(
                folders_total,
                inotify_roots,
                _read_int(INOTIFY / "max_user_watches"),
                _read_int(INOTIFY / "max_user_instances"),
            )
        )
    checks.append(state_check(state_dir))
    return checks


def print_table(checks: Sequence[Check], out: TextIO, *, width: int = 50) -> None:
    """The checks as columns CHECK, RESULT, FIX (the last two wrapped at `width` characters,
    never inside a word or a path), then a one-line verdict."""
    rows = [("CHECK", "RESULT", "FIX")] + [
        (c.name, ("PROBLEM: " if c.problem else "") + c.result, c.fix or "-") for c in checks
    ]
    w0 = max(len(r[0]) for r in rows)

    def wrap(text: str) -> list[str]:
        return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]

    wrapped = [(name, wrap(result), wrap(fix)) for name, result, fix in rows]
    w1 = max(len(x) for _, left, _ in wrapped for x in left)
    for name, left, right in wrapped:
        for i in range(max(len(left), len(right))):
            cells = (
                name if i == 0 else "",
                left[i] if i < len(left) else "",
                right[i] if i < len(right) else "",
            )
            print(f"{cells[0]:<{w0}}  {cells[1]:<{w1}}  {cells[2]}".rstrip(), file=out)
    problems = sum(1 for c in checks if c.problem)
    if problems:
        print(
            f"\n{problems} problem{'s' if problems != 1 else ''} found: see the FIX column.",
            file=out,
        )
    else:
        print("\nEverything looks ready.", file=out)


def run_doctor(
    rules_path: Path | None,
    folders: Sequence[Path],
    state_dir: Path,
    api_key_file: Path | None,
    out: TextIO,
) -> int:
    """Print the table of checks to `out`; 1 when any check found a problem, else 0."""
    checks = diagnose(rules_path, folders, state_dir, api_key_file)
    print_table(checks, out)
    return 1 if any(c.problem for c in checks) else 0
