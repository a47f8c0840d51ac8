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

from promptdrop.api import DEFAULT_BASE_URL
from promptdrop.api.ratelimit import RateLimits
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.timing import in_flight_for
from promptdrop.spec import ApiSettings, RuleConfig, RulesFile

CREDENTIAL_NAME = "toapis-api-key"  # the systemd credential (LoadCredential=) holding the key
KEY_VARIABLE = "TOAPIS_API_KEY"


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
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if path is api_key_file:
                raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
            continue
        if key:
            where = (
                f"the file {path}"
                if path is api_key_file
                else f"the systemd credential '{CREDENTIAL_NAME}'"
            )
            return key, where
    key = environ.get(KEY_VARIABLE, "").strip()
    return (key, KEY_VARIABLE) if key else None


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
