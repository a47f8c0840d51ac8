"""The rules file's models: the watched folders (`[[rules]]`), the API settings (`[api]`), and
the whole file. Field descriptions are the text of `promptdrop schema rules`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from promptdrop.config.defaults import FolderDefaults
from promptdrop.config.prices import PRICES_DESCRIPTION, Prices, normalised, price_table_schema
from promptdrop.filecheck.fields import AccountGroup, PollMode


class RuleConfig(BaseModel):
    """One watched folder and how it is watched."""

    model_config = ConfigDict(strict=True, extra="forbid", title="rule")

    name: str = Field(
        min_length=1,
        description="A short unique name for this watched folder, used in logs and status.",
    )
    path: Path = Field(
        strict=False,
        description="The folder to watch. Relative paths are "
        "relative to the rules file's folder; ~ means your home folder.",
    )
    recursive: bool = Field(default=True, description="Also watch subfolders (default true).")
    poll: PollMode = Field(
        default="auto",
        description="auto (poll only on network and FUSE filesystems), always "
        "(for shares that miss change events) or never.",
    )
    poll_interval: float = Field(
        default=5.0, gt=0, description="Seconds between scans when polling (default 5)."
    )
    settle: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a file must stay unchanged "
        "before it is read, so half-synced files are not taken (default 1).",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="How many API tasks of this folder may run at once, 1 to 512. Leave it "
        "out to have it sized from your account group: its documented submit rate times a "
        "typical 10 s task (default group 50, vip 167, svip 333), so the rate limit, not "
        "this, sets the pace. Spend is capped by daily_budget or daily_credits, not by this.",
    )
    daily_budget: int | None = Field(
        default=None,
        ge=1,
        description="At most this many tasks "
        "(one per image) are submitted per day for this folder, "
        "a day starting at local midnight; files over it wait for "
        "the next day, with a note beside them. Leave out for no "
        "limit.",
    )
    daily_credits: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="At most this many credits "
        "are spent per day for this folder (a day starting at local "
        "midnight), each task costing its model's and resolution's "
        "price from the [prices] table. A file whose task would go "
        "over it waits for the next day; one whose model and "
        "resolution have no price waits until one is added (never "
        "sent unpriced). Both this and daily_budget may be set: a task "
        "is sent only when both have room. Leave out for no limit.",
    )
    reconcile_interval: float = Field(
        default=600.0,
        ge=10,
        description="Seconds between full "
        "rescans that catch missed events, 10 or more (default "
        "600).",
    )
    resubmit_ambiguous: bool = Field(
        default=False,
        description="Resubmit a task whose "
        "submission answer was lost (may pay twice). Default false.",
    )
    defaults: FolderDefaults | None = Field(
        default=None,
        description="Folder defaults for the "
        "whole watched folder, below any .promptdrop.toml. "
        "Its references are relative to the watched folder.",
    )


class ApiSettings(BaseModel):
    """How to reach the ToAPIs API (the key itself never goes in a rules file)."""

    model_config = ConfigDict(strict=True, extra="forbid", title="api")

    base_url: str | None = Field(
        default=None,
        description="The API's address, e.g. "
        "https://toapis.com (default: TOAPIS_BASE_URL or "
        "https://toapis.com).",
    )
    account_group: AccountGroup = Field(
        default="default",
        description="Your ToAPIs account group, which sets the rate limits: default, vip or svip.",
    )
    timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds one API request "
        "may take before it counts as unanswered. A submission answered "
        "later is treated as lost: ambiguous, never resent.",
    )
    poll_first: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds between "
        "submitting an image and first asking whether it is ready. Leave it "
        "out to have it learned: 5 s (as the API's documentation advises) "
        "until three images of the same model and resolution are done, "
        "then the median time those took (0.5 to 60 s). Each ask counts "
        "against the query rate limit, never against what you pay. The "
        "--poll-interval option of promptdrop watch overrides it.",
    )
    poll_interval: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds between later "
        "asks while an image is not ready yet (default 5; the API "
        "advises 5 to 10), with a little random spread so many images "
        "do not ask at once. The --poll-interval option of promptdrop "
        "watch overrides it.",
    )
    submit_rate: float | None = Field(
        default=None,
        ge=0.1,
        le=1000,
        description="Image "
        "requests per second promptdrop sends at most (and ten "
        "times that in any 10 seconds). Leave out to keep to your "
        "account group's documented limit. Set it only if ToAPIs "
        "gave your account another limit: above the real one, the "
        "API refuses requests (nothing is paid; they are sent "
        "again 30 seconds later).",
    )


class RulesFile(BaseModel):
    """A whole rules file: API settings and the watched folders."""

    model_config = ConfigDict(strict=True, extra="forbid", title="promptdrop rules file")

    api: ApiSettings = Field(default_factory=ApiSettings, description="API settings ([api] table).")
    rules: list[RuleConfig] = Field(
        min_length=1, description="The watched folders, one [[rules]] table each; at least one."
    )
    ledger: str | None = Field(
        default=None,
        description="A PostgreSQL URL "
        "(postgresql://USER@HOST/DATABASE) for a ledger shared by several "
        "computers watching the same synced folders, so each request is "
        "paid once; leave out to keep the ledger on this computer. Keep "
        "the password out of it: use ~/.pgpass or PGPASSWORD.",
    )
    prices: Annotated[Prices, BeforeValidator(normalised), WithJsonSchema(price_table_schema())] = (
        Field(default_factory=dict, description=PRICES_DESCRIPTION)
    )
