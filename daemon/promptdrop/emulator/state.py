"""Everything the emulator remembers: tasks, uploads, rate windows, faults and stats.

One lock guards it all; no method does slow work while holding it (images are rendered by
the caller, outside the lock).
"""

from __future__ import annotations

import copy
import hashlib
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from promptdrop import imaging
from promptdrop.emulator.answers import BALANCE_FAILED, UNKNOWN_TASK_ANSWERS
from promptdrop.emulator.config import EmulatorConfig
from promptdrop.emulator.faults import REQUEST_FAULTS, STAT_NAMES, Faults
from promptdrop.emulator.ratelimit import Bucket, Decision
from promptdrop.emulator.validate import InvalidRequest, SubmitRequest

START_BALANCE = 100.0
PRICE_PER_TASK = 0.04
CREDITS_PER_USD = 200.0
# Share of a task's run time it spends queued before it is in_progress.
QUEUED_SHARE = 0.2


@dataclass
class Task:
    id: str
    request: SubmitRequest
    created_at: float
    duration: float
    fmt: str
    fails: bool
    # One name per image (several only when n > 1); the first is the task's single result.
    file_names: tuple[str, ...]
    top_level_only: bool | None = None
    expired_at_download: bool | None = None

    @property
    def done_at(self) -> float:
        return self.created_at + self.duration


@dataclass
class Upload:
    id: str
    name: str
    data: bytes
    fmt: str
    created_at: float


@dataclass(frozen=True)
class ResultFile:
    """A result that may be served. `pixels` None: the default model's documented size for
    `size`, which images.render(prompt, size, fmt) gives; otherwise images.render_pixels
    with these pixels, quality and variant (the image's index in its task)."""

    prompt: str
    size: str
    fmt: str
    pixels: tuple[int, int] | None = None
    quality: int | None = None
    variant: int = 0


def _empty_stats() -> dict[str, Any]:
    return {
        "submissions": [],
        "submit_requests": 0,
        "uploads": [],
        "polls": 0,
        "downloads": 0,
        "files_requests_with_authorization": 0,
        "responses_by_status": {},
        "faults_injected": {},
        "rate_limited": 0,
    }


class EmulatorState:
    """The shared state of one emulator; every public method takes the lock."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # Set once the files server is listening: result and upload URLs start with it.
        self.files_url = ""
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._faults = self.config.faults
        self._tasks: dict[str, Task] = {}
        self._results: dict[str, tuple[str, int]] = {}  # file name -> (task id, image index)
        # client_business_id -> the latest task sent with it (the docs say nothing of duplicates)
        self._business_ids: dict[str, str] = {}
        self._uploads: dict[str, Upload] = {}  # file name -> upload
        self._stats = _empty_stats()
        self._created = 0
        self._unknown_task_answers = 0
        self._buckets: dict[str, Bucket] = {}
        limits = self.config.rate_limits
        if limits is not None:
            self._buckets = {
                "submit": Bucket("submit", limits.submit_per_s, limits.submit_burst_10s),
                "query": Bucket("query", limits.query_per_s, limits.query_burst_10s),
            }

    # --- faults and stats -------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults for every request from now on."""
        with self._lock:
            self._faults = faults

    def draw_fault(self, endpoint: str) -> str | None:
        """Pick at most one per-request fault for this request and record it."""
        with self._lock:
            faults = self._faults
            if not faults.applies_to(endpoint):
                return None
            rates = [(name, float(getattr(faults, name))) for name in REQUEST_FAULTS]
            if not any(rate > 0 for _, rate in rates):
                return None
            u = self._rng.random()
            total = 0.0
            for name, rate in rates:
                total += rate
                if u < total:
                    self._record_fault(STAT_NAMES[name])
                    return name
            return None

    def record_fault(self, name: str) -> None:
        """Count one injected fault under `name` in stats["faults_injected"]."""
        with self._lock:
            self._record_fault(name)

    def _record_fault(self, name: str) -> None:
        injected = self._stats["faults_injected"]
        injected[name] = injected.get(name, 0) + 1

    def count(self, key: str, by: int = 1) -> None:
        """Add to one of the integer stats."""
        with self._lock:
            self._stats[key] += by

    def record_status(self, status: int) -> None:
        """Count one answer sent with this HTTP status."""
        with self._lock:
            by_status = self._stats["responses_by_status"]
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def stats(self) -> dict[str, Any]:
        """A deep copy of the stats, safe to keep and to serialise as JSON."""
        with self._lock:
            return copy.deepcopy(self._stats)

    def reset_stats(self) -> None:
        """Clear the stats only."""
        with self._lock:
            self._stats = _empty_stats()

    def reset(self) -> None:
        """Clear stats, tasks, uploads, rate windows and the balance."""
        with self._lock:
            self._stats = _empty_stats()
            self._tasks.clear()
            self._results.clear()
            self._business_ids.clear()
            self._uploads.clear()
            self._created = 0
            for bucket in self._buckets.values():
                bucket.clear()

    def rate_check(self, bucket: str) -> Decision | None:
        """Count the request against its bucket; None when rate limits are off."""
        with self._lock:
            limiter = self._buckets.get(bucket)
            if limiter is None:
                return None
            decision = limiter.check(time.monotonic())
            if not decision.allowed:
                self._stats["rate_limited"] += 1
            return decision

    def balance(self, scope: str = "token") -> dict[str, Any]:
        """The balance answer (toapis-models.md §4): a starting balance in USD minus a price
        per created task, in credits too. scope "token" (/v1/balance) or "user"
        (/v1/user/balance) only changes the failure message."""
        with self._lock:
            faults = self._faults
            if faults.balance_fails:
                return {"success": False, "message": BALANCE_FAILED[scope]}
            used = round(PRICE_PER_TASK * self._created, 4)
            remain = 0.0 if faults.quota_exhausted else round(max(0.0, START_BALANCE - used), 4)
            return {
                "success": True,
                # -1 when unlimited; the credit fields stay numbers (as in the docs' examples).
                "remain_balance": -1.0 if faults.unlimited_quota else remain,
                "used_balance": used,
                "remain_credits": round(remain * CREDITS_PER_USD, 2),
                "used_credits": round(used * CREDITS_PER_USD, 2),
                "credits_per_usd": CREDITS_PER_USD,
                "unlimited_quota": faults.unlimited_quota,
            }

    def next_unknown_task_answer(self) -> int:
        """Which of the UNKNOWN_TASK_ANSWERS to give next: they take turns, first one first."""
        with self._lock:
            turn = self._unknown_task_answers % len(UNKNOWN_TASK_ANSWERS)
            self._unknown_task_answers += 1
            return turn

    # --- tasks --------------------------------------------------------------------------

    def check_image_urls(self, urls: tuple[str, ...]) -> None:
        """Refuse references to this emulator's own files that are gone or expired."""
        now = time.time()
        uploads_prefix = f"{self.files_url}/uploads/"
        results_prefix = f"{self.files_url}/generated/"
        with self._lock:
            for i, url in enumerate(urls):
                if url.startswith(uploads_prefix):
                    upload = self._live_upload(url[len(uploads_prefix) :], now)
                    if upload is None:
                        raise InvalidRequest(
                            f"image_urls[{i}] could not be downloaded", f"image_urls[{i}]"
                        )
                    if upload.fmt not in imaging.GENERATION_FORMATS:
                        raise InvalidRequest(
                            f"image_urls[{i}] is a {upload.fmt.upper()} image; "
                            "generation accepts JPEG, PNG or WebP",
                            f"image_urls[{i}]",
                        )
                elif (
                    url.startswith(results_prefix)
                    and self._live_result(url[len(results_prefix) :], now) is None
                ):
                    raise InvalidRequest(
                        f"image_urls[{i}] could not be downloaded", f"image_urls[{i}]"
                    )

    def create_task(self, request: SubmitRequest) -> dict[str, Any]:
        """Create a task for a valid request; return the submit answer."""
        now = time.time()
        with self._lock:
            jitter = self.config.jitter
            delta = self._rng.uniform(-jitter, jitter) if jitter > 0 else 0.0
            duration = max(0.0, self.config.latency + delta)
            fmt = request.output_format or self.config.image_format
            if fmt == "alternate":
                fmt = "png" if self._created % 2 == 0 else "jpeg"
            fails = self._faults.task_failed > 0 and self._rng.random() < self._faults.task_failed
            if fails:
                self._record_fault("task_failed")
            gone = self._faults.task_gone > 0 and self._rng.random() < self._faults.task_gone
            token = secrets.token_hex(12)
            # The docs' URLs end in .jpg whatever the format: clients must sniff. The official
            # models' files carry their chosen format's extension, as a static host serves them.
            ext = imaging.EXTENSIONS[fmt] if request.row.official else ".jpg"
            stem = f"{int(now + duration)}_{token[:8]}"
            names = [f"{stem}{ext}"] + [f"{stem}_{i}{ext}" for i in range(1, request.images)]
            task = Task(
                id=f"task_img_{token}",
                request=request,
                created_at=now,
                duration=duration,
                fmt=fmt,
                fails=fails,
                file_names=tuple(names),
            )
            if gone:
                # Forgotten at once: the submit answer below is the last the API says of it.
                self._record_fault("task_gone")
            else:
                self._tasks[task.id] = task
                for index, name in enumerate(task.file_names):
                    self._results[name] = (task.id, index)
                if request.client_business_id is not None:
                    self._business_ids[request.client_business_id] = task.id
            self._created += 1
            self._stats["submissions"].append(
                {
                    "task_id": task.id,
                    "prompt": request.prompt,
                    "model": request.model,
                    "size": request.size,
                    "n": request.n,
                    "image_urls": list(request.image_urls),
                    "metadata": copy.deepcopy(request.metadata),
                    "at": now,
                    # Everything the paid task carried, exactly as it was sent.
                    "body": copy.deepcopy(request.body),
                }
            )
            return self._view(task, now)

    def task_view(self, task_id: str) -> dict[str, Any] | None:
        """The poll answer for a task, found by its id or by the client_business_id it was
        sent with; None when there is no such task."""
        now = time.time()
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None and task_id in self._business_ids:
                found = self._tasks.get(self._business_ids[task_id])
                mode = self._faults.business_ids
                visible = mode == "honoured" or (
                    mode == "delayed"
                    and found is not None
                    and now - found.created_at >= self._faults.business_id_delay
                )
                task = found if visible else None
            return None if task is None else self._view(task, now)

    def _view(self, task: Task, now: float) -> dict[str, Any]:
        req = task.request
        view: dict[str, Any] = {
            "id": task.id,
            "object": "generation.task",
            "model": req.model,
            "status": self._faults.running_status,
            "progress": 0,
            "created_at": int(task.created_at),
            "metadata": copy.deepcopy(req.metadata),
        }
        if req.client_business_id is not None and self._faults.business_ids != "ignored":
            view["client_business_id"] = req.client_business_id
        elapsed = now - task.created_at
        if elapsed < task.duration:
            if elapsed >= task.duration * QUEUED_SHARE:
                view["status"] = "in_progress"
                view["progress"] = max(1, min(99, int(100 * elapsed / task.duration)))
            return view
        if task.fails:
            view["status"] = "failed"
            view["error"] = {
                "code": "generation_failed",
                "message": "call upstream API failed: upstream returned status 422",
            }
            return view
        view["status"] = "completed"
        view["progress"] = 100
        view["completed_at"] = int(task.done_at)
        view["expires_at"] = int(task.done_at + self.config.result_ttl)
        urls = [f"{self.files_url}/generated/{name}" for name in task.file_names]
        if task.top_level_only is None:
            rate = self._faults.url_top_level_only
            task.top_level_only = rate > 0 and self._rng.random() < rate
            if task.top_level_only:
                self._record_fault("url_top_level_only")
        if task.top_level_only:
            view["url"] = urls[0]
        else:
            view["result"] = {"type": "image", "data": [{"url": url} for url in urls]}
        return view

    def _live_result(self, name: str, now: float) -> Task | None:
        task_id, _ = self._results.get(name, ("", 0))
        task = self._tasks.get(task_id) if task_id else None
        if task is None or task.fails or now < task.done_at:
            return None
        if now >= task.done_at + self.config.result_ttl:
            return None
        return task

    def result_file(self, name: str) -> ResultFile | None:
        """What to serve for GET /generated/<name>, or None: unknown, not done, expired."""
        now = time.time()
        with self._lock:
            task = self._live_result(name, now)
            if task is None:
                return None
            if task.expired_at_download is None:
                rate = self._faults.expired_results
                task.expired_at_download = rate > 0 and self._rng.random() < rate
            if task.expired_at_download:
                self._record_fault("expired_results")
                return None
            req = task.request
            if req.row.pixels is not None:
                return ResultFile(req.prompt, req.size, task.fmt)
            return ResultFile(
                req.prompt,
                req.size,
                task.fmt,
                pixels=req.pixels,
                quality=req.quality,
                variant=self._results[name][1],
            )

    # --- uploads ------------------------------------------------------------------------

    def add_upload(self, data: bytes, fmt: str) -> dict[str, Any]:
        """Keep an uploaded image; return the `data` object of the upload answer."""
        now = time.time()
        token = secrets.token_hex(8)
        name = f"{int(now)}_{token}{imaging.EXTENSIONS[fmt]}"
        upload = Upload(id=f"upload_{token}", name=name, data=data, fmt=fmt, created_at=now)
        with self._lock:
            self._uploads[name] = upload
            self._stats["uploads"].append(
                {
                    "upload_id": upload.id,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "format": fmt,
                }
            )
        return {
            "id": upload.id,
            "url": f"{self.files_url}/uploads/{name}",
            "mime_type": imaging.MIME_TYPES[fmt],
            "size": len(data),
        }

    def _live_upload(self, name: str, now: float) -> Upload | None:
        upload = self._uploads.get(name)
        ttl = self.config.upload_ttl
        if upload is None or (ttl is not None and now >= upload.created_at + ttl):
            return None
        return upload

    def upload_file(self, name: str) -> Upload | None:
        """What to serve for GET /uploads/<name>, or None: unknown or expired."""
        now = time.time()
        with self._lock:
            return self._live_upload(name, now)
