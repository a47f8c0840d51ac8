"""Stopping a daemon subprocess, shared by the benchmarks and the test harness (tests/harness.py).

It lives in the bench package because only a package module has one name everywhere: pytest
imports it as `bench.procs` (tests/ is on its sys.path), `python -m tests.bench` reaches it by a
relative import, and mypy, run once over the whole tree, then sees a single module.
"""

from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if the process does not exit within `timeout`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
