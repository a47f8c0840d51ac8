"""The baseline of the overhead benchmark: the least a client can do per image.

    python -m tests.bench.rawloop BASE_URL N CONCURRENCY POLL_WAIT

Submits N generations (distinct prompts), polls each until completed, downloads each result,
with CONCURRENCY workers on one pooled httpx client; no ledger, no files, no rate limiting.
Prints one JSON line: seconds from the first request to the last download, and CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

import httpx

KEY = os.environ.get("TOAPIS_API_KEY", "sk-bench")


RETRIES = {"count": 0}


async def _request(
    client: httpx.AsyncClient, method: str, url: str, json_body: object = None
) -> httpx.Response:
    # The emulator's small listen backlog can reset a connection when 32 arrive at once; the
    # daemon's client retries those too (a lost submit answer would be ambiguous for it, but
    # here a duplicate task costs nothing).
    for attempt in range(5):
        try:
            r = await client.request(method, url, json=json_body)
            r.raise_for_status()
            return r
        except httpx.TransportError:
            if attempt == 4:
                raise
            RETRIES["count"] += 1
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def _one(
    client: httpx.AsyncClient, files: httpx.AsyncClient, i: int, poll_wait: float
) -> int:
    body = {
        "model": "gemini-2.5-flash-image-preview",
        "prompt": f"raw loop image {i}: a lighthouse at dusk, watercolour",
        "size": "1:1",
        "n": 1,
    }
    r = await _request(client, "POST", "/v1/images/generations", json_body=body)
    task_id = r.json()["id"]
    while True:
        await asyncio.sleep(poll_wait)
        r = await _request(client, "GET", f"/v1/images/generations/{task_id}")
        task = r.json()
        if task["status"] == "completed":
            break
        if task["status"] == "failed":
            raise RuntimeError(f"task {task_id} failed")
    url = task.get("url") or task["result"]["data"][0]["url"]
    r = await _request(files, "GET", url)
    return len(r.content)


async def run(base_url: str, n: int, concurrency: int, poll_wait: float) -> float:
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as client,
        httpx.AsyncClient(limits=limits) as files,
    ):
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                await _one(client, files, i, poll_wait)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - started


def main(argv: list[str]) -> int:
    base_url, n, concurrency, poll_wait = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    seconds = asyncio.run(run(base_url, n, concurrency, poll_wait))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": usage.ru_utime + usage.ru_stime,
                "retries": RETRIES["count"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
