"""`promptdrop emulator`: run the emulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import json
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


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return 0 then, 1 if a port is taken, 2 on bad options."""
    try:
        faults = Faults.from_dict(json.loads(args.faults)) if args.faults else Faults()
        if args.files_port is not None:
            files_port = args.files_port
        else:
            files_port = args.port + 1 if args.port else 0
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
