"""The `promptdrop` command: argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptdrop import __version__

DESCRIPTION = """\
promptdrop turns NAME.prompt.toml files dropped into watched folders into images
from the ToAPIs image API (Gemini 2.5 Flash Image, "nano-banana"), written next to
the prompt file. It never pays twice for the same request.

The API key comes from TOAPIS_API_KEY, --api-key-file, or the systemd credential
'toapis-api-key'. TOAPIS_BASE_URL selects the API; PROMPTDROP_STATE_DIR the ledger's
folder (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop).
"""


def _cmd_check(args: argparse.Namespace) -> int:
    from promptdrop.check import run_check

    return run_check([Path(p) for p in args.paths], sys.stdout)


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
    p.set_defaults(func=_cmd_check)

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
