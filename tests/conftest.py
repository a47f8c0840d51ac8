"""Shared fixtures: a real emulator of the ToAPIs API on ephemeral 127.0.0.1 ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from promptdrop.emulator import Emulator, EmulatorConfig


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started emulator: api_key "test-key", 0.05 s latency, no jitter, no rate limits."""
    emu = Emulator(
        EmulatorConfig(api_key="test-key", latency=0.05, jitter=0.0, rate_limits=None)
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Call with EmulatorConfig keyword arguments (its own defaults apply: latency 2 s, rate
    limits on, any key accepted) to get a started emulator; all are stopped at teardown."""
    started: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(**kwargs)).start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
