"""`promptdrop watch`: the daemon, from the command line's values to `service.runner.run`.

Builds the rules (a rules file, or the folders named), finds the API key, and turns every
error the user must fix into one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from promptdrop import logs
from promptdrop.commands.existing import state_dir_or_default
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.lookups import policy_from
from promptdrop.ledger import LedgerUnavailable
from promptdrop.service.config import (
    ConfigError,
    WatchOptions,
    resolve_api_key,
    resolve_base_url,
)
from promptdrop.service.lifecycle import AlreadyRunning
from promptdrop.service.runner import run
from promptdrop.spec import RulesFile, SpecError, read_rules, rules_for_folders

EXIT_USAGE = 2
NO_KEY = (
    "promptdrop watch: no API key. Set TOAPIS_API_KEY, or pass --api-key-file, or (under "
    "systemd) the credential 'toapis-api-key'. To try promptdrop without a key, run: "
    "promptdrop demo"
)


@dataclass(frozen=True)
class WatchArgs:
    """What the command line says about one `promptdrop watch`."""

    folders: Sequence[Path] = ()
    rules: Path | None = None
    state_dir: Path | None = None
    api_key_file: Path | None = None
    once: bool = False
    poll_interval: float | None = None
    lease_time: float = 30.0
    metrics: str | None = None  # HOST:PORT
    ledger: str | None = None


class _Usage(Exception):
    """A message for stderr, then exit 2."""


def rules_loader(args: WatchArgs) -> RulesFile:
    """The rules as the command line names them; SIGHUP calls this again. Raises SpecError,
    OSError, or _Usage when neither folders nor a rules file was given."""
    if args.rules is not None:
        return read_rules(args.rules)
    if args.folders:
        return rules_for_folders(list(args.folders))
    raise _Usage("promptdrop watch: name a folder to watch, or a rules file with --rules")


def seconds_problem(option: str, value: float | None, *, most: float) -> str | None:
    """What is wrong with a number of seconds given on the command line (None: nothing, or
    not given): it must be a finite number above 0 and at most `most`."""
    if value is None or (math.isfinite(value) and 0 < value <= most):
        return None
    return (
        f"promptdrop watch: {option} must be a number of seconds above 0 and at most "
        f"{most:g}; it is {value:g}"
    )


def _check_numbers(args: WatchArgs) -> None:
    for option, value, most in (
        ("--poll-interval", args.poll_interval, 3600.0),  # the download link lives 24 hours
        ("--lease-time", args.lease_time, 86400.0),
    ):
        problem = seconds_problem(option, value, most=most)
        if problem is not None:
            raise _Usage(problem)


def _metrics_address(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    from promptdrop.service.metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise _Usage(f"promptdrop watch: --metrics: {exc}") from None


def watch_options(args: WatchArgs) -> WatchOptions:
    """The daemon's options; the key is registered with the log filter before it is used.
    Raises _Usage, SpecError, ConfigError."""
    _check_numbers(args)
    rules = rules_loader(args)
    key = resolve_api_key(args.api_key_file)
    if not key:
        raise _Usage(NO_KEY)
    logs.register_secret(key)
    return WatchOptions(
        rules=rules,
        state_dir=state_dir_or_default(args.state_dir),
        api_key=key,
        base_url=resolve_base_url(rules.api),
        once=args.once,
        progress=args.once and sys.stderr.isatty(),
        engine=EngineOptions(
            poll_first=args.poll_interval,
            poll_interval=args.poll_interval,
            lease_ttl=args.lease_time,
            lookups=policy_from(os.environ),
        ),
        reload_rules=lambda: rules_loader(args),
        metrics=_metrics_address(args.metrics),
        ledger=args.ledger or rules.ledger,
        from_rules_file=args.rules is not None,
    )


def run_watch(args: WatchArgs, err: TextIO) -> int:
    """Run the daemon until it stops; the process exit code (2: something to fix first)."""
    try:
        return asyncio.run(run(watch_options(args)))
    except _Usage as exc:
        print(str(exc), file=err)
    except SpecError as exc:
        print(str(exc), file=err)
    except (AlreadyRunning, ConfigError) as exc:
        print(f"promptdrop watch: {exc}", file=err)
    except LedgerUnavailable as exc:
        # The shared ledger stayed away longer than the daemon waits; under systemd,
        # Restart=on-failure starts it again.
        print(
            f"promptdrop watch: {exc}; stopping (running tasks resume on the next start)",
            file=err,
        )
        return 1
    return EXIT_USAGE
