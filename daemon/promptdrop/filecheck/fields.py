"""The keys' allowed values and limits, shared by prompt, defaults and rules files."""

from __future__ import annotations

from typing import Literal, get_args

PROMPT_SUFFIX = ".prompt.toml"
DEFAULTS_NAME = ".promptdrop.toml"
MAX_PROMPT_FILE_BYTES = 65536
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
MAX_REFERENCES = 14
MAX_PROMPT_CHARS = 1000
MAX_COUNT = 10
# Rules files are small too; the same cap keeps a stray binary from being slurped.
MAX_RULES_FILE_BYTES = 1024 * 1024

Size = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"]
Model = Literal["gemini-2.5-flash-image-preview", "nano-banana"]
Orientation = Literal["landscape", "portrait"]
PollMode = Literal["auto", "always", "never"]
AccountGroup = Literal["default", "vip", "svip"]

SIZES: tuple[str, ...] = get_args(Size)
MODELS: tuple[str, ...] = get_args(Model)
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
CANONICAL_MODEL = "gemini-2.5-flash-image-preview"
DEFAULT_SIZE = "1:1"
STYLE_SEPARATOR = "\n\n"

# The keys whose value is one of a few words: the message lists them.
CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "model": MODELS,
    "orientation": ORIENTATIONS,
    "poll": get_args(PollMode),
    "account_group": get_args(AccountGroup),
}

# What every other key needs, as the message says it.
NEEDS: dict[str, str] = {
    "prompt": "text in quotes",
    "style": "text in quotes",
    "count": "a whole number from 1 to 10",
    "references": 'a list of file names or web addresses, like ["sketch.png"]',
    "name": "a non-empty text in quotes",
    "path": "a folder path in quotes",
    "recursive": "true or false",
    "resubmit_ambiguous": "true or false",
    "poll_interval": "a number of seconds greater than 0 (at most 600 under [api])",
    "poll_first": "a number of seconds greater than 0 and at most 600",
    "submit_rate": "a number of requests per second from 0.1 to 1000 (leave it out for your "
    "account group's limit)",
    "timeout": "a number of seconds greater than 0 and at most 600",
    "settle": "a number of seconds, 0 or more",
    "max_in_flight": "a whole number from 1 to 64",
    "daily_budget": "a whole number, 1 or more (leave it out for no limit)",
    "reconcile_interval": "a number of seconds, 10 or more",
    "base_url": 'a web address in quotes, like "https://toapis.com"',
    "defaults": "a table of folder defaults",
    "api": "a table ([api])",
    "rules": "a list of [[rules]] tables",
}
