"""Metrics: scraped over real HTTP from `start_metrics` while an engine works against the
emulator, and the address syntax of the metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import CANARY
from promptdrop.api import RateLimits, RetryPolicy, ToApisClient, TransientError
from promptdrop.emulator import Emulator, Faults
from promptdrop.jobs.engine import Engine, EngineOptions
from promptdrop.ledger import LEDGER_NAME, Ledger
from promptdrop.service.metrics import (
    Metrics,
    MetricsServer,
    format_address,
    parse_address,
    start_metrics,
)
from promptdrop.service.runner import scan
from promptdrop.spec import rules_for_folders

FAST = EngineOptions(poll_first=0.05, poll_interval=0.05, retry_later=0.1)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(server: MetricsServer) -> Samples:
    host, port = server.address
    with urllib.request.urlopen(
        f"http://{format_address((host, port))}/metrics", timeout=10
    ) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_metrics_follow_the_work_over_http(tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.prompt.toml").write_text(f'prompt = "metric picture {i}"\n')
    rule = rules_for_folders([folder]).rules[0].model_copy(update={"daily_budget": 5})

    async def main() -> None:
        with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
            async with ToApisClient(
                CANARY,
                emulator.base_url,
                rate_limits=RateLimits.unlimited(),
                retry=RetryPolicy(attempts=2, base=0.01),
            ) as client:
                engine = Engine(ledger, client, [rule], FAST)
                metrics = Metrics(engine)
                server = start_metrics(("127.0.0.1", 0), metrics)
                try:
                    # Scrapes run on the server's thread: the loop must stay free to answer.
                    before = await asyncio.to_thread(_scrape, server)
                    assert _value(before, "promptdrop_jobs", state="pending") == 0
                    assert _value(before, "promptdrop_budget_left", rule=rule.name) == 5
                    assert _value(before, "promptdrop_submissions_paused") == 0

                    emulator.set_faults(Faults(error_503=1.0, endpoints=("poll",)))
                    for path in scan(rule):
                        await engine.handle_file(path, rule)
                    seen: dict[str, Samples] = {}

                    async def answered_503() -> bool:
                        seen["now"] = await asyncio.to_thread(_scrape, server)
                        return bool(
                            _value(
                                seen["now"],
                                "promptdrop_api_answers_total",
                                endpoint="task",
                                status="503",
                            )
                        )

                    deadline = time.monotonic() + 10
                    while not await answered_503():
                        assert time.monotonic() < deadline, "no 503 counted"
                        await asyncio.sleep(0.05)
                    during = seen["now"]
                    assert (_value(during, "promptdrop_jobs", state="running") or 0) >= 1
                    emulator.set_faults(Faults())
                    await engine.wait_idle()

                    after = await asyncio.to_thread(_scrape, server)
                    submitted = len(emulator.stats()["submissions"])
                    assert submitted == 3
                    assert _value(after, "promptdrop_submissions_total", rule=rule.name) == 3
                    assert (
                        _value(
                            after, "promptdrop_api_answers_total", endpoint="submit", status="200"
                        )
                        == 3
                    )
                    assert (
                        _value(after, "promptdrop_api_retries_total", endpoint="task") or 0
                    ) >= 1
                    assert _value(after, "promptdrop_jobs", state="done") == 3
                    assert _value(after, "promptdrop_task_seconds_count") == 3
                    assert (_value(after, "promptdrop_task_seconds_sum") or 0) > 0
                    assert _value(after, "promptdrop_budget_left", rule=rule.name) == 2
                finally:
                    server.close()
                start_metrics(server.address, metrics).close()  # the port is free again

    asyncio.run(main())


def test_answers_that_never_came_are_counted_as_errors_and_engines_keep_apart(
    tmp_path: Path,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]

    async def main() -> None:
        with (
            Ledger(tmp_path / "a" / LEDGER_NAME) as one,
            Ledger(tmp_path / "b" / LEDGER_NAME) as two,
        ):
            async with (
                ToApisClient(
                    CANARY, f"http://127.0.0.1:{dead}", retry=RetryPolicy(attempts=2, base=0.01)
                ) as client,
                ToApisClient(CANARY, f"http://127.0.0.1:{dead}") as other,
            ):
                quiet = Metrics(Engine(two, other, []))
                loud = Metrics(Engine(one, client, []))
                with pytest.raises(TransientError):
                    await client.balance()
                for metrics, tries in ((loud, 2.0), (quiet, None)):
                    server = start_metrics(("127.0.0.1", 0), metrics)
                    try:
                        samples = await asyncio.to_thread(_scrape, server)
                    finally:
                        server.close()
                    assert (
                        _value(
                            samples,
                            "promptdrop_api_answers_total",
                            endpoint="balance",
                            status="error",
                        )
                        == tries
                    )
                    assert _value(samples, "promptdrop_budget_left", rule="x") is None

    asyncio.run(main())


def test_a_taken_port_is_refused_in_plain_words(tmp_path: Path) -> None:
    async def main() -> None:
        with Ledger(tmp_path / LEDGER_NAME) as ledger:
            async with ToApisClient(CANARY, "http://127.0.0.1:9") as client:
                metrics = Metrics(Engine(ledger, client, []))
                first = start_metrics(("127.0.0.1", 0), metrics)
                try:
                    with pytest.raises(OSError, match=r"cannot show metrics at 127\.0\.0\.1:"):
                        start_metrics(first.address, metrics)
                finally:
                    first.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (" localhost:65535 ", ("localhost", 65535)),
    ],
)
def test_metrics_addresses_are_read(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9464", 'did you mean ":9464"'),
        ("localhost", "has no port"),
        ("::1:9464", "in brackets"),
        ("[::1]", "missing its port"),
        ("[not-v6]:80", "is not an IPv6 address"),
        ("host:0", "from 1 to 65535"),
        ("host:70000", "from 1 to 65535"),
        ("host:http", "must be a number"),
        ("", "has no port"),
    ],
)
def test_bad_metrics_addresses_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_address(text)
    assert "HOST:PORT" in str(caught.value) or "brackets" in str(caught.value)
