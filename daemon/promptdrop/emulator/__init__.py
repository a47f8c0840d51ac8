"""A local stand-in for the ToAPIs image API, for trying promptdrop, tests and demos.

with Emulator(EmulatorConfig(api_key="k", latency=0.1)) as emu:
    ...  # talk to emu.base_url; result files live on emu.files_url
"""

from __future__ import annotations

from promptdrop.emulator.config import EmulatorConfig, RateLimitConfig
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "Faults", "RateLimitConfig"]
