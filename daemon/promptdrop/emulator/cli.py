"""`promptdrop emulator`: run the emulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from promptdrop.emulator.config import IMAGE_FORMATS, EmulatorConfig, RateLimitConfig
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.server import Emulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to its subcommand parser."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8787, help="API port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--files-port",
        type=int,
        default=None,
        help="port of the files host serving result and upload URLs (default: PORT+1, "
        "or a free one when PORT is 0)",
    )
    parser.add_argument(
        "--key",
        default=None,
        metavar="KEY",
        help="accept only this API key (default: accept any Bearer token)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=2.0,
        help="seconds from submitting a task to its image being ready (default: %(default)s)",
    )
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="latency varies by up to this many seconds"
    )
    parser.add_argument(
        "--format",
        dest="image_format",
        choices=IMAGE_FORMATS,
        default="png",
        help="format of result images; alternate switches per task (default: %(default)s)",
    )
    parser.add_argument(
        "--result-ttl",
        type=float,
        default=86400.0,
        help="seconds a result image stays downloadable (default: %(default)s)",
    )
    parser.add_argument(
        "--upload-ttl",
        type=float,
        default=None,
        help="seconds an uploaded reference stays available (default: forever)",
    )
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="do not enforce the documented rate limits"
    )
    parser.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help='faults to inject, e.g. \'{"error_503": 0.2, "reset": 0.05}\' '
        "(field names as in promptdrop.emulator.Faults)",
    )
    parser.add_argument("--seed", type=int, default=None, help="make injected faults repeatable")


MAX_PORT = 65535
FAULTS_EXAMPLE = """'{"error_503": 0.2, "reset": 0.05}'"""


def ports_problem(port: int, files_port: int, *, given: bool) -> str | None:
    """What is wrong with the API port and the files port (None: nothing); `given`: the files
    port was set with --files-port rather than taken as PORT+1."""
    if not 0 <= port <= MAX_PORT:
        return f"--port must be from 0 to {MAX_PORT} (0 picks a free one), not {port}"
    if not 0 <= files_port <= MAX_PORT:
        if given:
            return (
                f"--files-port must be from 0 to {MAX_PORT} (0 picks a free one), not {files_port}"
            )
        return (
            f"the files host listens on PORT+1 = {files_port}, beyond {MAX_PORT}: choose a "
            "lower --port, or set --files-port"
        )
    return None


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def faults_from_json(text: str) -> Faults:
    """The faults a --faults JSON text asks for. Raises ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"--faults is not valid JSON ({exc.args[0] if exc.args else exc}); write an "
            f"object, such as {FAULTS_EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--faults must be a JSON object of fault names and values, such as "
            f"{FAULTS_EXAMPLE}; it is {_json_kind(data)}"
        )
    endpoints = data.get("endpoints")
    if "endpoints" in data and (
        not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints)
    ):
        raise ValueError('endpoints must be a list of names, such as ["submit", "poll"]')
    try:
        return Faults.from_dict(data)
    except TypeError as exc:
        raise ValueError(f"--faults has a value of the wrong kind ({exc})") from None


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return 0 then, 1 if a port is taken, 2 on bad options."""
    try:
        faults = faults_from_json(args.faults) if args.faults else Faults()
        if args.files_port is not None:
            files_port = args.files_port
        else:
            files_port = args.port + 1 if args.port else 0
        problem = ports_problem(args.port, files_port, given=args.files_port is not None)
        for option, value in (
            ("--latency", args.latency),
            ("--jitter", args.jitter),
            ("--result-ttl", args.result_ttl),
            ("--upload-ttl", args.upload_ttl),
        ):
            if value is not None and not math.isfinite(value):
                problem = problem or f"{option} must be a number of seconds, not {value}"
        if problem is not None:
            raise ValueError(problem)
        config = EmulatorConfig(
            api_key=args.key or None,
            host=args.host,
            port=args.port,
            files_port=files_port,
            latency=args.latency,
            jitter=args.jitter,
            image_format=args.image_format,
            result_ttl=args.result_ttl,
            upload_ttl=args.upload_ttl,
            rate_limits=None if args.no_rate_limits else RateLimitConfig(),
            faults=faults,
            seed=args.seed,
        )
    except (ValueError, TypeError) as exc:
        print(f"promptdrop emulator: {exc}", file=sys.stderr)
        return 2

    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: no I/O or locks in a signal handler.
        nonlocal stop_requested
        stop_requested = True

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        try:
            emulator = Emulator(config).start()
        except OSError as exc:
            print(
                f"promptdrop emulator: cannot listen on {args.host} port {args.port} "
                f"or {files_port} ({exc.strerror or exc}). Choose other ports with --port "
                "and --files-port.",
                file=sys.stderr,
            )
            return 1
        try:
            print(
                f"promptdrop emulator: API on {emulator.base_url} files on "
                f"{emulator.files_url} (Ctrl-C to stop)",
                flush=True,
            )
            while not stop_requested:
                time.sleep(0.1)
        finally:
            emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
