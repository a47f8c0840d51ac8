"""Shared fixtures: a real emulator of the ToAPIs API on ephemeral 127.0.0.1 ports, and the
session-end check that the canary API key (harness.CANARY) leaked nowhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from figures import record
from harness import CANARY, scan_for_key
from promptdrop.emulator import Emulator, EmulatorConfig


@pytest.fixture(scope="session", autouse=True)
def the_canary_key_leaks_nowhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session (per xdist worker): no file under the session's base temporary folder
    (logs, ledgers, prompt folders, images, notes) and no captured command output holds the
    canary key, plainly, URL- or base64-encoded. Files registered with harness.key_file
    (given to --api-key-file) are the only exception."""
    yield
    scan = scan_for_key(tmp_path_factory.getbasetemp())
    record(
        "api_key_canary",
        {"files_scanned": scan.files, "outputs_scanned": scan.outputs, "leaks": len(scan.leaks)},
    )
    if scan.leaks:
        pytest.fail("the canary API key leaked into:\n" + "\n".join(scan.leaks[:50]), pytrace=False)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started emulator: the canary key, 0.05 s latency, no jitter, no rate limits."""
    emu = Emulator(
        EmulatorConfig(api_key=CANARY, latency=0.05, jitter=0.0, rate_limits=None)
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Call with EmulatorConfig keyword arguments to get a started emulator; all are stopped at
    teardown. Its own defaults apply (latency 2 s, rate limits on), except the key: the canary
    unless `api_key` is given (None accepts any key)."""
    started: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        kwargs.setdefault("api_key", CANARY)
        emu = Emulator(EmulatorConfig(**kwargs)).start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
