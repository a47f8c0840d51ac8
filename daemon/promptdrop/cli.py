"""The `promptdrop` command: argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptdrop import __version__

DESCRIPTION = """\
promptdrop turns NAME.prompt.toml files dropped into watched folders into images
from the ToAPIs image API (the Gemini "nano-banana" family: `promptdrop models`),
written next to the prompt file. It never pays twice for the same request.

The API key comes from TOAPIS_API_KEY, --api-key-file, or the systemd credential
'toapis-api-key'. TOAPIS_BASE_URL selects the API; PROMPTDROP_STATE_DIR the ledger's
folder (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop).
"""


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _cmd_check(args: argparse.Namespace) -> int:
    from promptdrop.commands.check import run_check

    return run_check([Path(p) for p in args.paths], sys.stdout, root=args.root)


def _cmd_watch(args: argparse.Namespace) -> int:
    from promptdrop import logs
    from promptdrop.commands.watch import WatchArgs, run_watch

    if args.dry_run:
        return _cmd_dry_run(args)
    logs.configure(json=None if args.log_format == "auto" else args.log_format == "json")
    watch = WatchArgs(
        folders=[Path(f) for f in args.folders],
        rules=_path(args.rules),
        state_dir=_path(args.state_dir),
        api_key_file=_path(args.api_key_file),
        once=args.once,
        poll_interval=args.poll_interval,
        lease_time=args.lease_time,
        metrics=args.metrics,
        ledger=args.ledger,
    )
    return run_watch(watch, sys.stderr)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from promptdrop import logs
    from promptdrop.commands.doctor import run_doctor
    from promptdrop.commands.existing import state_dir_or_default

    # The table is the output; the API client's retry lines would only clutter it.
    logs.configure(json=False, level="error")
    return run_doctor(
        _path(args.rules),
        [Path(f) for f in args.folders],
        state_dir_or_default(_path(args.state_dir)),
        _path(args.api_key_file),
        sys.stdout,
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from promptdrop.commands.status import run_status

    return run_status(
        state_dir=_path(args.state_dir),
        ledger_url=args.ledger,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
        rules_path=_path(args.rules),
    )


def _cmd_retry(args: argparse.Namespace) -> int:
    from promptdrop.commands.retry import run_retry

    return run_retry(
        Path(args.path),
        state_dir=_path(args.state_dir),
        ledger_url=args.ledger,
        force=args.force,
        yes=args.yes,
        out=sys.stdout,
        err=sys.stderr,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from promptdrop import logs
    from promptdrop.commands.demo import run_demo

    logs.configure(json=False, level="warning")
    return run_demo(Path(args.folder), _path(args.state_dir))


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from promptdrop.spec import json_schema

    print(json.dumps(json_schema(args.kind), indent=2, sort_keys=True))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from promptdrop.commands.models import print_models

    return print_models(sys.stdout)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from promptdrop.emulator.cli import run_from_args

    return run_from_args(args)


def _cmd_pause(args: argparse.Namespace) -> int:
    from promptdrop.commands.pause import run_pause

    return run_pause(
        args.rule,
        state_dir=_path(args.state_dir),
        ledger_url=args.ledger,
        rules_path=_path(args.rules),
        out=sys.stdout,
        err=sys.stderr,
    )


def _cmd_resume(args: argparse.Namespace) -> int:
    from promptdrop.commands.pause import run_resume

    return run_resume(
        args.rule,
        state_dir=_path(args.state_dir),
        ledger_url=args.ledger,
        out=sys.stdout,
        err=sys.stderr,
    )


def _cmd_completion(args: argparse.Namespace) -> int:
    from promptdrop.commands.completion import completion_script

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def _state_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the ledger lives (default: $PROMPTDROP_STATE_DIR, else "
        "$STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop); keep it on local disk",
    )


def _ledger_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="the ledger shared with other hosts in PostgreSQL "
        "(postgresql://USER@HOST/DB); default: SQLite in the state directory",
    )


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_watch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _state_dir_option(p)
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
    _ledger_option(p)
    p.add_argument(
        "--lease-time",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --ledger: how soon another host takes over the jobs of one that "
        "stopped (default 30)",
    )
    _add_dry_run(p)
    p.set_defaults(func=_cmd_watch)


def _cmd_dry_run(args: argparse.Namespace) -> int:
    from promptdrop.commands.dryrun import run_dry_watch

    return run_dry_watch(
        [Path(f) for f in args.folders],
        _path(args.rules),
        _path(args.state_dir),
        args.ledger,
        sys.stdout,
        sys.stderr,
    )


def _add_dry_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="implies --once: read, check and plan every prompt file as watch would, and "
        "print what would be submitted (tasks, uploads, credits) without calling the API, "
        "without a key, and without writing to the folders or the ledger; exit 1 when a "
        "file is invalid",
    )


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _state_dir_option(p)
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    p.set_defaults(func=_cmd_doctor)


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="list the jobs in the ledger",
        description="List every job: state, prompt file, task, image, error. With --rules, "
        "first each rule's spending today against its daily_budget and daily_credits.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--rules",
        metavar="FILE",
        help="the rules file watch uses: show each rule's tasks and credits spent today",
    )
    _state_dir_option(p)
    _ledger_option(p)
    p.set_defaults(func=_cmd_status)


def _add_retry(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "retry",
        help="make a file or folder again on purpose",
        description="Queue the failed and ambiguous jobs of a prompt file (or of every prompt "
        "file under a folder) again, and read invalid ones again. A finished file whose image "
        "was deleted gets it back for free while a kept copy or the 24-hour download link "
        "allows. With --force, finished ones are made again too: that pays again, and every "
        "other prompt file asking for the same request gets the new image; when there are "
        "such files, they are listed and nothing is queued without --yes.",
    )
    p.add_argument("path", metavar="PATH", help="a prompt file or a folder")
    p.add_argument(
        "--force",
        action="store_true",
        help="also regenerate images that were made successfully (paid again)",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="with --force: go ahead even when other prompt files share the request "
        "(they get the new image too)",
    )
    _state_dir_option(p)
    _ledger_option(p)
    p.set_defaults(func=_cmd_retry)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _state_dir_option(p)
    p.set_defaults(func=_cmd_demo)


def _add_schema(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list the models and what each takes (sizes, resolutions, options)",
        description="List every model of the nano-banana family promptdrop can ask, with the "
        "sizes, resolutions, reference count, prompt limit and [options] each one takes.",
    )
    p.set_defaults(func=_cmd_models)


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "emulator",
        help="run a local server that behaves like the ToAPIs API",
        description="Run a local stand-in for the ToAPIs image API, for trying promptdrop "
        "without a key, for tests and for demos.",
    )
    from promptdrop.emulator.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_emulator)


def _add_pause(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pause",
        help="stop submitting new tasks for a rule (or all rules); running ones finish",
        description="Pause a rule's submissions (without RULE: every rule's). A running "
        "daemon notices within a few seconds: it submits no new task for the rule, while "
        "tasks already running are still polled and their images written. The pause is kept "
        "in the ledger, so it outlasts a restart; `promptdrop status` shows it, and "
        "`promptdrop resume` ends it. Nothing is written into the watched folders.",
    )
    p.add_argument("rule", nargs="?", metavar="RULE", help="the rule's name (default: all)")
    p.add_argument(
        "--rules",
        metavar="FILE",
        help="the rules file watch uses, to pause a rule that has not seen a prompt file yet",
    )
    _state_dir_option(p)
    _ledger_option(p)
    p.set_defaults(func=_cmd_pause)

    p = sub.add_parser(
        "resume",
        help="submit again after promptdrop pause",
        description="End a pause made with `promptdrop pause` (without RULE: every pause). A "
        "running daemon submits the files held within a few seconds.",
    )
    p.add_argument("rule", nargs="?", metavar="RULE", help="the rule's name (default: all)")
    _state_dir_option(p)
    _ledger_option(p)
    p.set_defaults(func=_cmd_resume)


def _add_completion(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description="Print a completion script for promptdrop's commands and options. "
        "Install it with, for bash: promptdrop completion bash > "
        "~/.local/share/bash-completion/completions/promptdrop; for zsh: promptdrop "
        "completion zsh > ~/.zfunc/_promptdrop (with ~/.zfunc on $fpath); for fish: "
        "promptdrop completion fish > ~/.config/fish/completions/promptdrop.fish",
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell")
    p.set_defaults(func=_cmd_completion)


def _cmd_init(args: argparse.Namespace) -> int:
    from promptdrop.commands.init import run_init

    return run_init(Path(args.folder), sys.stdout, sys.stderr)


def _add_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="write a starter rules file, a drop folder and an example prompt",
        description="Write FOLDER/promptdrop.rules.toml (commented) watching FOLDER/drop, "
        "and an example prompt file in FOLDER/drop, then print the commands to run next. "
        "Never overwrites: when any of these files exists, nothing is written (exit 1).",
    )
    p.add_argument(
        "folder", nargs="?", default=".", help="where to start (default: the current folder)"
    )
    p.set_defaults(func=_cmd_init)


def _cmd_history(args: argparse.Namespace) -> int:
    import time

    from promptdrop.commands.history import run_history

    return run_history(
        [Path(f) for f in args.folders],
        since=args.since,
        as_json=args.json,
        rules_path=_path(args.rules),
        state_dir=_path(args.state_dir),
        ledger_url=args.ledger,
        now=time.time(),
        out=sys.stdout,
        err=sys.stderr,
    )


def _add_history(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="every paid task, newest first, and what was spent per rule and per day",
        description="List every paid task in the ledger, newest first: local time, state "
        "(done, failed, running, ambiguous, or refunded when the API proved it created "
        "nothing), rule, prompt file, its images now, task id, model, size and resolution; "
        "then the tasks per rule and per day, and their credits with --rules when the rules "
        "file has [prices].",
    )
    p.add_argument(
        "folders", nargs="*", metavar="FOLDER", help="only tasks of prompt files under it"
    )
    p.add_argument(
        "--since",
        metavar="DATE",
        help="only tasks sent from then on: 2026-12-01, 2026-12-01T09:30, today, yesterday, "
        "7d, 12h",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: tasks and totals")
    p.add_argument("--rules", metavar="FILE", help="price the tasks by this rules file's [prices]")
    _state_dir_option(p)
    _ledger_option(p)
    p.set_defaults(func=_cmd_history)


def _cmd_reload(args: argparse.Namespace) -> int:
    from promptdrop.commands.reload import run_reload

    return run_reload(
        _path(args.state_dir),
        wait=args.wait,
        timeout=args.timeout,
        out=sys.stdout,
        err=sys.stderr,
    )


def _reload_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not {text!r}")
    return value


def _add_reload(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reload",
        help="make the running daemon read its rules file again",
        description="Signal the daemon that holds the state folder (SIGHUP) to read its rules "
        "file again. With --wait, return only once it has applied the new rules, or exit 1 "
        "with the reason when it refused them (it then keeps the rules it had). The systemd "
        "units run this as ExecReload=, so `systemctl reload` waits too.",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait until the new rules are applied or refused"
    )
    p.add_argument(
        "--timeout",
        type=_reload_timeout,
        default=90.0,
        metavar="SECONDS",
        help="with --wait: give up after this long (default 90)",
    )
    _state_dir_option(p)
    p.set_defaults(func=_cmd_reload)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptdrop",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"promptdrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_check(sub)
    _add_watch(sub)
    _add_doctor(sub)
    _add_status(sub)
    _add_retry(sub)
    _add_demo(sub)
    _add_schema(sub)
    _add_models(sub)
    _add_emulator(sub)
    _add_pause(sub)
    _add_completion(sub)

    _add_init(sub)
    _add_history(sub)
    _add_reload(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        _flush()  # --help and --version wrote to stdout: a closed pipe must end quietly too
        raise
    except BrokenPipeError:
        return _closed_pipe()
    if not getattr(args, "func", None):
        parser.print_help()
        _flush()
        return 2
    from promptdrop.commands.failure import empty_argument

    empty = empty_argument(args)
    if empty is not None:
        print(f"promptdrop {args.command}: {empty}", file=sys.stderr)
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: a reader gone meanwhile is caught below
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except Exception as exc:
        return _internal_error(exc, args)


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise SystemExit(_closed_pipe()) from None


def _closed_pipe() -> int:
    from promptdrop.commands.failure import closed_pipe

    return closed_pipe()


def _internal_error(exc: Exception, args: argparse.Namespace) -> int:
    """The last line of defence: one line on stderr (the key masked), the traceback only
    with PROMPTDROP_DEBUG=1; exit 1."""
    import os
    import traceback

    from promptdrop.commands.failure import debugging, internal_error_line, masked, secrets

    hidden = secrets(getattr(args, "api_key_file", None), os.environ)
    try:
        if debugging(os.environ):
            print(masked("".join(traceback.format_exception(exc)), hidden), file=sys.stderr)
        print(internal_error_line(exc, hidden), file=sys.stderr)
    except OSError:
        pass  # stderr itself is gone: the exit code is all that is left to say it
    return 1
