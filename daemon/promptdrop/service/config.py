"""What the daemon is asked to do, and what the user must fix before it can start.

`WatchOptions` is everything `promptdrop watch` (or the demo) hands the daemon; the functions
here derive the engine's and the client's settings from it, find the API key, and say which
watched folders are missing. `ConfigError` is the one error meaning "fix this, then start
again": the command line prints it and exits 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from promptdrop.api import DEFAULT_BASE_URL
from promptdrop.api.ratelimit import RateLimits
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.timing import in_flight_for
from promptdrop.spec import ApiSettings, RuleConfig, RulesFile

CREDENTIAL_NAME = "toapis-api-key"  # the systemd credential (LoadCredential=) holding the key
KEY_VARIABLE = "TOAPIS_API_KEY"
BASE_URL_VARIABLE = "TOAPIS_BASE_URL"


class ConfigError(RuntimeError):
    """Something the user must fix before the daemon can start."""


@dataclass
class WatchOptions:
    rules: RulesFile
    state_dir: Path
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    once: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    progress: bool = False
    # Reads the rules again on SIGHUP (raises SpecError when they are invalid); None: no reload.
    reload_rules: Callable[[], RulesFile] | None = None
    metrics: tuple[str, int] | None = None  # serve Prometheus metrics on this address
    # A postgresql:// URL: the ledger shared with other hosts; None: SQLite in state_dir.
    ledger: str | None = None
    # The rules come from a rules file, whose folders "need not exist yet": the daemon waits
    # for a missing one (not with --once). Folders named on the command line must exist.
    from_rules_file: bool = False


def _key_files(api_key_file: Path | None, environ: Mapping[str, str]) -> list[Path]:
    files = [] if api_key_file is None else [api_key_file]
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        files.append(Path(creds) / CREDENTIAL_NAME)
    return files


def _find_key(api_key_file: Path | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(the key, where it came from), or None; ConfigError when the named file is unreadable."""
    for path in _key_files(api_key_file, environ):
        try:
            key = _read_key(path)
        except (OSError, ConfigError) as exc:
            if path is not api_key_file:
                continue
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
        if not key and path is api_key_file:
            raise ConfigError(
                f"the API key file {path} is empty: write the key in it (on one line), or "
                f"leave out --api-key-file to use {KEY_VARIABLE}"
            )
        if key:
            where = (
                f"the file {path}"
                if path is api_key_file
                else f"the systemd credential '{CREDENTIAL_NAME}'"
            )
            return key, where
    key = environ.get(KEY_VARIABLE, "").strip()
    return (key, KEY_VARIABLE) if key else None


_MAX_KEY_FILE = 64 * 1024  # far more than any key; /dev/zero must not fill the memory


def _read_key(path: Path) -> str:
    """The key a file holds, stripped. Raises OSError, or ConfigError when it is too large
    or not text."""
    # Opened without blocking, then read blocking: a named pipe nobody writes to reads as
    # empty rather than hanging, while `--api-key-file <(pass show toapis)` still works.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"the API key file {path} is too large to hold an API key")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the API key file {path} is not text (UTF-8)") from None


def resolve_api_key(
    api_key_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The key from --api-key-file, the systemd credential, or TOAPIS_API_KEY, in that order.

    Raises ConfigError when `api_key_file` is given but cannot be read.
    """
    found = _find_key(api_key_file, os.environ if environ is None else environ)
    return None if found is None else found[0]


def key_source(api_key_file: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Where `resolve_api_key` finds the key, in words ("TOAPIS_API_KEY" when nowhere else);
    never the key itself."""
    try:
        found = _find_key(api_key_file, os.environ if environ is None else environ)
    except ConfigError:
        found = None
    return KEY_VARIABLE if found is None else found[1]


def base_url_problem(value: str, where: str = BASE_URL_VARIABLE) -> str | None:
    """What is wrong with an API address (None: nothing), in words naming `where` it was set
    and an example of a good one."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 (reading it checks it: a port beyond 65535 raises)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme in ("http", "https") and parts.hostname:
        return None
    hint = ""
    if parts is not None and not parts.scheme.startswith("http") and "://" not in value:
        hint = f" (did you mean http://{value.strip()}?)"
    return (
        f"{where} must be an http:// or https:// address, such as {DEFAULT_BASE_URL} (or "
        f"http://127.0.0.1:8787 for `promptdrop emulator`); it is {value!r}{hint}"
    )


def resolve_base_url(api: ApiSettings, environ: Mapping[str, str] | None = None) -> str:
    """The API address: TOAPIS_BASE_URL, else the rules file's [api] base_url, else the
    default. Raises ConfigError naming the setting when it is not a usable address."""
    env = os.environ if environ is None else environ
    value = env.get(BASE_URL_VARIABLE, "")
    where = BASE_URL_VARIABLE
    if not value.strip():
        value, where = api.base_url or DEFAULT_BASE_URL, "[api] base_url in the rules file"
    problem = base_url_problem(value, where)
    if problem is not None:
        raise ConfigError(problem)
    return value.strip()


def state_dir_problem(state_dir: Path, exc: OSError) -> str:
    """Why the state folder cannot be used, and what to do, for the error `exc` raised while
    making it or its lock file."""
    fix = (
        "give --state-dir (or PROMPTDROP_STATE_DIR) a folder on local disk that you may "
        "write; it is made if missing"
    )
    if isinstance(exc, FileExistsError):
        return f"the state folder {state_dir} is a file, not a folder: {fix}"
    if isinstance(exc, NotADirectoryError):
        return f"the state folder {state_dir} cannot be made: part of its path is a file: {fix}"
    return f"cannot use the state folder {state_dir} ({exc.strerror or exc}): {fix}"


RootKind = Literal["folder", "missing", "file"]


def root_kind(path: Path) -> RootKind:
    """What a watched root is right now (anything that is neither a folder nor missing, such
    as a fifo, counts as a file). Stats the path: keep it off the event loop."""
    try:
        return "folder" if path.is_dir() else "file" if path.exists() else "missing"
    except OSError:
        return "missing"


def root_refusal(
    rule: RuleConfig, kind: RootKind, *, from_rules_file: bool, once: bool
) -> str | None:
    """Why the daemon cannot start with this root (None: it can; a missing root of a rules
    file is then waited for). A root that is a file is always refused; a missing one when
    it was named on the command line (most likely a typo) or with --once (nothing to wait
    for)."""
    path = rule.path
    if kind == "folder":
        return None
    if kind == "file":
        text = f"{path} is a file, not a folder (rule {rule.name!r}): watch takes folders"
        if str(path).endswith(".prompt.toml"):
            text += f"; to check a prompt file, run: promptdrop check {path}"
        return text
    if not from_rules_file:
        return f"the folder {path} does not exist: check its name, or create it (mkdir -p {path})"
    if once:
        return (
            f"the watched folder {path} does not exist (rule {rule.name!r}): --once makes what "
            "is there now; create it, or run without --once to wait for it"
        )
    return None


def ledger_problem(location: object, exc: Exception) -> str:
    """Why the SQLite ledger at `location` cannot be opened, for an sqlite3 error `exc`, and
    what to do (never "delete it": it is the record of what was paid)."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (
            f"the ledger {location} is damaged or not a promptdrop ledger ({text}): restore "
            "it from a backup, or give --state-dir another folder (a new ledger there does "
            "not know what was already paid)"
        )
    return (
        f"cannot open the ledger {location} ({text}): check that its folder is on local disk "
        "and that you may write it, or give --state-dir another folder"
    )


def missing_folders(rules: Iterable[RuleConfig]) -> list[RuleConfig]:
    """The rules whose watched folder is not a folder (this stats each root: run it off the
    event loop, a root may be on a slow share)."""
    return [r for r in rules if not Path(r.path).is_dir()]


def rate_limits(api: ApiSettings) -> RateLimits:
    """The client-side limits: the account group's, with `submit_rate` when the rules set one."""
    limits = RateLimits.for_group(api.account_group)
    return limits if api.submit_rate is None else limits.with_submit_rate(api.submit_rate)


def engine_options(opts: WatchOptions) -> EngineOptions:
    """The engine's options, with the poll timing the caller (--poll-interval) set, else the
    rules file's [api] poll_first / poll_interval."""
    engine = opts.engine
    api = opts.rules.api
    return replace(
        engine,
        in_flight=in_flight_for(rate_limits(api).submit_per_s),
        poll_first=api.poll_first if engine.poll_first is None else engine.poll_first,
        poll_interval=api.poll_interval if engine.poll_interval is None else engine.poll_interval,
    )
