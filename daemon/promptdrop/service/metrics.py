"""Prometheus metrics of one engine, and the small HTTP server that shows them at /metrics.

Each engine's metrics own their registry (never prometheus_client's global one), so several
engines can live in one process. `Metrics(engine)` subscribes to the engine (an observer told
of submissions and finished tasks) and chains itself onto the API client's hooks; job states,
budgets and the pause are read from the engine's status snapshot when scraped. The engine
never imports this module.

The scrape runs on the server's thread, but the ledger belongs to the engine's thread, so
those reads hop onto the engine's event loop (or, when it is not running, show the last
values read).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptdrop.jobs.engine import Engine, EngineStatus
from promptdrop.ledger import JobState

log = structlog.get_logger("promptdrop.metrics")

# Seconds from submit to image written: the API takes seconds to minutes; retries and outages
# can stretch it to hours.
LATENCY_BUCKETS = (
    5.0,
    10.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    float("inf"),
)
SCRAPE_WAIT = 5.0  # seconds a scrape waits for a busy engine before showing the last values


# What a scrape reads from the engine's side.
Snapshot = EngineStatus


class Metrics:
    """The metrics of one engine; `registry` is what /metrics shows.

    Made once per engine, before its work starts: it counts from then on.
    """

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.submissions = Counter(
            "promptdrop_submissions",
            "Paid generation requests sent (intents committed), by rule.",
            ["rule"],
            registry=self.registry,
        )
        self.answers = Counter(
            "promptdrop_api_answers",
            'Answers of the ToAPIs API by endpoint and HTTP status; status="error" when no '
            "answer came (refused connection, reset, timeout).",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.retries = Counter(
            "promptdrop_api_retries",
            "Requests to the API tried again, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "promptdrop_task_seconds",
            "Seconds from submitting a task to its image written.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner = threading.get_ident()
        self._last = Snapshot()
        self.registry.register(_EngineCollector(self))
        engine.observe(self)
        client = engine.client
        client.on_answer = _chain(client.on_answer, self.answer)
        client.on_retry = _chain(client.on_retry, self.retry)
        loop = _running_loop()
        if loop is not None:
            self.attach_loop(loop)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tell the metrics which event loop (and so which thread) owns the engine's ledger."""
        self._loop = loop
        self._owner = threading.get_ident()

    def answer(self, endpoint: str, status: int | None) -> None:
        """Count one API answer (status None: no answer came)."""
        label = "error" if status is None else str(status)
        self.answers.labels(endpoint=endpoint, status=label).inc()

    def retry(self, endpoint: str) -> None:
        """Count one retry of an API request."""
        self.retries.labels(endpoint=endpoint).inc()

    def submitted(self, rule: str | None) -> None:
        """Count one paid submission whose intent was just committed."""
        self.submissions.labels(rule=rule or "").inc()

    def task_done(self, seconds: float) -> None:
        """Observe one task's time from submit to image written."""
        self.task_seconds.observe(max(seconds, 0.0))

    def job_finished(self, job_id: int, state: JobState) -> None:
        """Nothing to count: the jobs by state come from the engine's snapshot."""

    def snapshot(self) -> Snapshot:
        """Read job states, budgets and the pause, safely from any thread."""
        if threading.get_ident() == self._owner:
            try:
                self._last = self._read()
            except Exception:
                log.exception("metrics: reading the ledger failed; showing the last values")
            return self._last
        loop = self._loop
        if loop is None or not loop.is_running():
            return self._last  # nobody may touch the ledger from here: show the last values
        future = asyncio.run_coroutine_threadsafe(self._read_async(), loop)
        try:
            self._last = future.result(timeout=SCRAPE_WAIT)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            future.cancel()
        except Exception:
            log.exception("metrics: reading the ledger failed; showing the last values")
        return self._last

    async def _read_async(self) -> Snapshot:
        return self._read()

    def _read(self) -> Snapshot:
        return self._engine.status()


class _EngineCollector(Collector):
    """Job states, budget left and the pause, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Describing must not read the ledger (it runs at registration, on any thread).
        return list(self._families(Snapshot()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._metrics.snapshot()))

    @staticmethod
    def _families(snap: Snapshot) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "promptdrop_jobs", "Jobs in the ledger by state.", labels=["state"]
        )
        for state in JobState:
            jobs.add_metric([str(state)], snap.jobs.get(str(state), 0))
        yield jobs
        left = GaugeMetricFamily(
            "promptdrop_budget_left",
            "Submissions the rule's daily budget still allows today (rules with a budget only).",
            labels=["rule"],
        )
        for name, n in sorted(snap.budget_left.items()):
            left.add_metric([name], n)
        yield left
        credits = GaugeMetricFamily(
            "promptdrop_credits_left",
            "Credits the rule's daily_credits still allows today (rules with daily_credits only).",
            labels=["rule"],
        )
        for name, amount in sorted(snap.credits_left.items()):
            credits.add_metric([name], amount)
        yield credits
        paused = GaugeMetricFamily(
            "promptdrop_submissions_paused",
            "1 while submissions are paused (the API refused the key or the quota is empty).",
        )
        paused.add_metric([], 1 if snap.paused else 0)
        yield paused


# The HTTP endpoint ---------------------------------------------------------------------------


class MetricsServer:
    """A running /metrics endpoint; `close()` stops it and frees the port."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.address: tuple[str, int] = (str(httpd.server_address[0]), int(httpd.server_port))

    def close(self) -> None:
        """Stop serving and release the socket; safe to call twice."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_metrics(address: tuple[str, int], metrics: Metrics) -> MetricsServer:
    """Serve an engine's `metrics` at http://HOST:PORT/metrics on a background thread.

    Port 0 picks a free port (see `MetricsServer.address`). Raises OSError with a plain message
    when the address cannot be used (port taken, address not on this machine).
    """
    host, port = address
    loop = _running_loop()
    if loop is not None:
        metrics.attach_loop(loop)
    try:
        httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot show metrics at {format_address(address)}: "
            f"{exc.strerror or exc}; choose another address or port",
        ) from None
    server = MetricsServer(httpd, thread)
    log.info("metrics served", url=f"http://{format_address(server.address)}/metrics")
    return server


def parse_address(text: str) -> tuple[str, int]:
    """Read "HOST:PORT", "[IPv6]:PORT" or ":PORT" (meaning 127.0.0.1:PORT).

    Raises ValueError with a message saying how to write it.
    """
    raw = text.strip()
    example = 'write it as HOST:PORT, like "127.0.0.1:9464", "[::1]:9464" or ":9464"'
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"the metrics address {text!r} is missing its port: {example}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{host!r} in the metrics address {text!r} is not an IPv6 address: {example}"
            ) from None
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep:
            hint = f' (did you mean ":{raw}"?)' if raw.isdigit() else ""
            raise ValueError(f"the metrics address {text!r} has no port{hint}: {example}")
        if ":" in host:
            raise ValueError(
                f"put an IPv6 address in brackets in the metrics address "
                f'{text!r}, like "[::1]:9464"'
            )
        host = host or "127.0.0.1"
        if any(ch.isspace() for ch in host) or "/" in host:
            raise ValueError(f"{host!r} in the metrics address {text!r} is not a host: {example}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(
            f"the port in the metrics address {text!r} must be a number from 1 to 65535: {example}"
        )
    return host, int(port_text)


def format_address(address: tuple[str, int]) -> str:
    """HOST:PORT, with an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _chain(first: Callable[..., None] | None, then: Callable[..., None]) -> Callable[..., None]:
    """A hook that calls an observer already in place, then ours."""
    if first is None:
        return then

    def both(*args: Any) -> None:
        first(*args)
        then(*args)

    return both
