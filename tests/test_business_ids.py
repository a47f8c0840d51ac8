"""client_business_id over a real socket: the client sends it at the top level and finds the
task by it, against the emulator honouring it, ignoring it, or showing it late."""

from __future__ import annotations

import asyncio

import pytest

from harness import CANARY
from promptdrop.api import TaskState, ToApisClient
from promptdrop.api.ratelimit import RateLimits
from promptdrop.emulator import Emulator, Faults


async def _submit_and_find(
    emu: Emulator, business_id: str, wait: float = 0.0
) -> tuple[str, list[TaskState | None]]:
    async with ToApisClient(CANARY, emu.base_url, rate_limits=RateLimits.unlimited()) as client:
        task = await client.submit(
            model="nano-banana", prompt="find me", size="1:1", client_business_id=business_id
        )
        found = [await client.find_by_business_id(business_id)]
        if wait:
            await asyncio.sleep(wait)
            found.append(await client.find_by_business_id(business_id))
        return task.id, found


def test_an_honoured_business_id_is_sent_at_the_top_level_and_finds_the_task(
    emulator: Emulator,
) -> None:
    task_id, [found] = asyncio.run(_submit_and_find(emulator, "pd-honoured"))
    [sub] = emulator.stats()["submissions"]
    assert sub["body"]["client_business_id"] == "pd-honoured"
    assert "client_business_id" not in sub["body"].get("metadata", {})
    assert found is not None and found.id == task_id
    assert found.raw["client_business_id"] == "pd-honoured"


def test_an_ignored_business_id_finds_nothing(emulator: Emulator) -> None:
    emulator.set_faults(Faults(business_ids="ignored"))
    _task_id, [found] = asyncio.run(_submit_and_find(emulator, "pd-ignored"))
    assert found is None


def test_a_delayed_business_id_is_found_only_after_the_delay(emulator: Emulator) -> None:
    emulator.set_faults(Faults(business_ids="delayed", business_id_delay=0.5))
    task_id, [early, late] = asyncio.run(_submit_and_find(emulator, "pd-late", wait=0.7))
    assert early is None
    assert late is not None and late.id == task_id


def test_an_unknown_business_id_is_not_found(emulator: Emulator) -> None:
    async def main() -> object:
        async with ToApisClient(CANARY, emulator.base_url) as client:
            return await client.find_by_business_id("pd-never-sent")

    assert asyncio.run(main()) is None


@pytest.mark.parametrize("mode", ["sideways", ""])
def test_the_emulator_refuses_an_unknown_business_id_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="business_ids must be one of honoured, ignored, delayed"):
        Faults(business_ids=mode)
