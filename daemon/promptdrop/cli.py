"""The `promptdrop` command: argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from promptdrop import __version__

if TYPE_CHECKING:
    from promptdrop.ledger import LedgerBase

DESCRIPTION = """\
promptdrop turns NAME.prompt.toml files dropped into watched folders into images
from the ToAPIs image API (Gemini 2.5 Flash Image, "nano-banana"), written next to
the prompt file. It never pays twice for the same request.

The API key comes from TOAPIS_API_KEY, --api-key-file, or the systemd credential
'toapis-api-key'. TOAPIS_BASE_URL selects the API; PROMPTDROP_STATE_DIR the ledger's
folder (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop).
"""


def _cmd_check(args: argparse.Namespace) -> int:
    from promptdrop.commands.check import run_check

    return run_check([Path(p) for p in args.paths], sys.stdout, root=args.root)


def _state_dir(args: argparse.Namespace) -> Path:
    from promptdrop.ledger import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _existing_ledger(args: argparse.Namespace, command: str) -> Path | None:
    """The ledger file, or None after saying plainly that there is none yet."""
    from promptdrop.ledger import LEDGER_NAME

    path = _state_dir(args) / LEDGER_NAME
    if not path.exists():
        print(
            f"promptdrop {command}: no ledger yet at {path} (the daemon has not run with this "
            "state folder; see --state-dir)",
            file=sys.stderr,
        )
        return None
    return path


def _cmd_watch(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from promptdrop import logs
    from promptdrop.api import DEFAULT_BASE_URL
    from promptdrop.jobs.engine import EngineOptions
    from promptdrop.ledger import LedgerUnavailable
    from promptdrop.service.runner import (
        AlreadyRunning,
        ConfigError,
        WatchOptions,
        resolve_api_key,
        run,
    )
    from promptdrop.spec import RulesFile, SpecError, read_rules, rules_for_folders

    logs.configure(json=None if args.log_format == "auto" else args.log_format == "json")
    try:
        if args.rules:
            rules = read_rules(Path(args.rules))
        elif args.folders:
            rules = rules_for_folders([Path(f) for f in args.folders])
        else:
            print(
                "promptdrop watch: name a folder to watch, or a rules file with --rules",
                file=sys.stderr,
            )
            return 2
        key = resolve_api_key(Path(args.api_key_file) if args.api_key_file else None)
        if not key:
            print(
                "promptdrop watch: no API key. Set TOAPIS_API_KEY, or pass --api-key-file, "
                "or (under systemd) the credential 'toapis-api-key'. To try promptdrop "
                "without a key, run: promptdrop demo",
                file=sys.stderr,
            )
            return 2
        logs.register_secret(key)
        base_url = os.environ.get("TOAPIS_BASE_URL") or rules.api.base_url or DEFAULT_BASE_URL
        metrics = None
        if args.metrics:
            from promptdrop.service.metrics import parse_address

            try:
                metrics = parse_address(args.metrics)
            except ValueError as exc:
                print(f"promptdrop watch: --metrics: {exc}", file=sys.stderr)
                return 2
        # SIGHUP reads the same rules again: the file, or the folders named on the command line.
        rules_path = Path(args.rules) if args.rules else None
        folders = [Path(f) for f in args.folders]

        def reload_rules() -> RulesFile:
            return read_rules(rules_path) if rules_path else rules_for_folders(folders)

        opts = WatchOptions(
            rules=rules,
            state_dir=_state_dir(args),
            api_key=key,
            base_url=base_url,
            once=args.once,
            progress=args.once and sys.stderr.isatty(),
            engine=EngineOptions(
                poll_first=args.poll_interval,
                poll_interval=args.poll_interval,
                lease_ttl=args.lease_time,
            ),
            reload_rules=reload_rules,
            metrics=metrics,
            ledger=args.ledger or rules.ledger,
        )
        return asyncio.run(run(opts))
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (AlreadyRunning, ConfigError) as exc:
        print(f"promptdrop watch: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:
        # The shared ledger stayed away longer than the daemon waits; under systemd,
        # Restart=on-failure starts it again.
        print(
            f"promptdrop watch: {exc}; stopping (running tasks resume on the next start)",
            file=sys.stderr,
        )
        return 1


def _cmd_doctor(args: argparse.Namespace) -> int:
    from promptdrop import logs
    from promptdrop.commands.doctor import run_doctor

    # The table is the output; the API client's retry lines would only clutter it.
    logs.configure(json=False, level="error")
    return run_doctor(
        Path(args.rules) if args.rules else None,
        [Path(f) for f in args.folders],
        _state_dir(args),
        Path(args.api_key_file) if args.api_key_file else None,
        sys.stdout,
    )


def _open_existing(args: argparse.Namespace, command: str) -> LedgerBase | None:
    """The shared ledger (--ledger), else the state directory's; None after saying why not."""
    from promptdrop.ledger import Ledger, LedgerUnavailable, LedgerUrlError, open_ledger

    if not args.ledger:
        path = _existing_ledger(args, command)
        return None if path is None else Ledger(path)
    try:
        return open_ledger(args.ledger, _state_dir(args))
    except (LedgerUrlError, LedgerUnavailable) as exc:
        print(f"promptdrop {command}: {exc}", file=sys.stderr)
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    from promptdrop.commands.admin import print_status

    ledger = _open_existing(args, "status")
    if ledger is None:
        return 1
    with ledger:
        return print_status(ledger, sys.stdout, as_json=args.json)


def _cmd_retry(args: argparse.Namespace) -> int:
    from promptdrop.commands.admin import retry

    ledger = _open_existing(args, "retry")
    if ledger is None:
        return 1
    with ledger:
        n = retry(ledger, Path(args.path), sys.stdout, force=args.force)
    print(
        f"{n} job(s) queued again; the running daemon picks them up within seconds "
        "(or the next `promptdrop watch`)."
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from promptdrop import logs
    from promptdrop.commands.demo import run_demo

    logs.configure(json=False, level="warning")
    return run_demo(Path(args.folder), Path(args.state_dir) if args.state_dir else None)


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from promptdrop.spec import json_schema

    print(json.dumps(json_schema(args.kind), indent=2, sort_keys=True))
    return 0


def _cmd_emulator(args: argparse.Namespace) -> int:
    from promptdrop.emulator.cli import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptdrop",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"promptdrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "check",
        help="validate prompt files, folder defaults and rules files",
        description="Validate prompt files (*.prompt.toml), folder defaults (.promptdrop.toml) "
        "and rules files. Folders are searched recursively. Prints path:line:col: message "
        "for each problem; exits 0 when all are valid, 1 otherwise.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a file or a folder")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the watched folder that references must stay inside "
        "(default: the folder given, or a file's own folder)",
    )
    p.set_defaults(func=_cmd_check)

    def state_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the ledger lives (default: $PROMPTDROP_STATE_DIR, else "
            "$STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop); keep it on local disk",
        )

    def ledger_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--ledger",
            metavar="URL",
            help="the ledger shared with other hosts in PostgreSQL "
            "(postgresql://USER@HOST/DB); default: SQLite in the state directory",
        )

    p = sub.add_parser(
        "watch",
        help="the daemon: watch folders and turn prompt files into images",
        description="Watch folders for NAME.prompt.toml files and write each one's image next "
        "to it. Folders given here are watched recursively with default settings; --rules "
        "gives per-folder settings. Stop with Ctrl-C or SIGTERM: running tasks resume on the "
        "next start. SIGHUP reloads the rules without stopping running tasks.",
    )
    p.add_argument("folders", nargs="*", metavar="FOLDER", help="a folder to watch")
    p.add_argument("--rules", metavar="FILE", help="a rules file (see rules/*.rules.toml)")
    p.add_argument(
        "--once",
        action="store_true",
        help="process every prompt file present, wait for the images, and exit: "
        "0 when all succeeded, 1 when some failed",
    )
    state_dir_option(p)
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often running tasks are polled, first poll included (default: the "
        "rules file's [api] poll_first and poll_interval, 5 s as the API advises)",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: readable on a terminal, JSON lines otherwise",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)",
    )
    ledger_option(p)
    p.add_argument(
        "--lease-time",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --ledger: how soon another host takes over the jobs of one that "
        "stopped (default 30)",
    )
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser(
        "doctor",
        help="check the key, the API, the watched folders and system limits",
        description="Check that promptdrop can run here: the API key (with one free call), "
        "the API's reachability, each watched folder (there, writable, file system, polled "
        "or not), the inotify limits, and the ledger's folder. Give it the same folders or "
        "--rules as watch. Prints a table with a fix for each problem; exits 1 if there is "
        "any problem, 0 otherwise. Never prints the key.",
    )
    p.add_argument("folders", nargs="*", metavar="FOLDER", help="a folder watch would watch")
    p.add_argument("--rules", metavar="FILE", help="the rules file watch would use")
    state_dir_option(p)
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "status",
        help="list the jobs in the ledger",
        description="List every job: state, prompt file, task, image, error.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    state_dir_option(p)
    ledger_option(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "retry",
        help="make a file or folder again on purpose",
        description="Queue the failed and ambiguous jobs of a prompt file (or of every prompt "
        "file under a folder) again. With --force, finished ones too: that pays again.",
    )
    p.add_argument("path", metavar="PATH", help="a prompt file or a folder")
    p.add_argument(
        "--force",
        action="store_true",
        help="also regenerate images that were made successfully (paid again)",
    )
    state_dir_option(p)
    ledger_option(p)
    p.set_defaults(func=_cmd_retry)

    p = sub.add_parser(
        "demo",
        help="try promptdrop on example prompts with the built-in emulator",
        description="Copy the example prompts into FOLDER, start the built-in emulator, make "
        "their images, and say where they are. Needs no API key and no network.",
    )
    p.add_argument(
        "folder",
        nargs="?",
        default="promptdrop-demo",
        help="where to put the examples (default ./promptdrop-demo)",
    )
    state_dir_option(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of prompt files, folder defaults or rules files",
        description="Print a JSON Schema, for editors that complete and check TOML files.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        default="prompt",
        choices=["prompt", "defaults", "rules"],
        help="which file: NAME.prompt.toml (default), .promptdrop.toml, or a rules file",
    )
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "emulator",
        help="run a local server that behaves like the ToAPIs API",
        description="Run a local stand-in for the ToAPIs image API, for trying promptdrop "
        "without a key, for tests and for demos.",
    )
    from promptdrop.emulator.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
