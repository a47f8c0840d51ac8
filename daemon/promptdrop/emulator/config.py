"""Settings of one emulator run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from promptdrop.emulator.faults import Faults

ImageFormat = Literal["png", "jpeg", "alternate"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg", "alternate")


@dataclass(frozen=True)
class RateLimitConfig:
    """Allowances per account, as in the docs' "default" group; each bucket has both a
    per-second rate and a 10-second burst window."""

    submit_per_s: float = 5.0
    submit_burst_10s: int = 50
    query_per_s: float = 50.0
    query_burst_10s: int = 500


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves.

    api_key None accepts any non-empty Bearer token. latency is the seconds from a task's
    creation to its completion (plus or minus a uniform `jitter`). image_format "alternate"
    switches between PNG and JPEG from one task to the next. result_ttl / upload_ttl are
    the seconds result / upload files stay downloadable (upload_ttl None: forever).
    rate_limits None disables rate limiting. seed makes fault draws and latency jitter
    repeatable.
    """

    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    files_port: int = 0
    latency: float = 2.0
    jitter: float = 0.0
    image_format: ImageFormat = "png"
    result_ttl: float = 86400.0
    upload_ttl: float | None = None
    rate_limits: RateLimitConfig | None = field(default_factory=RateLimitConfig)
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        if self.result_ttl <= 0 or (self.upload_ttl is not None and self.upload_ttl <= 0):
            raise ValueError("result_ttl and upload_ttl must be positive")
