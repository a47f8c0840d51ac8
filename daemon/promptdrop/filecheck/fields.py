"""The keys' allowed values and limits, shared by prompt, defaults and rules files.

The model-dependent values (sizes, models, resolutions, option choices) are written out as
`Literal` types so pydantic and the JSON Schemas see them; tests/test_models_table.py keeps them
equal to `promptdrop.capabilities`, the one place the model facts live.
"""

from __future__ import annotations

from typing import Literal, get_args

PROMPT_SUFFIX = ".prompt.toml"
DEFAULTS_NAME = ".promptdrop.toml"
MAX_PROMPT_FILE_BYTES = 65536
# The API's "10MB" read the strict way (10,000,000 bytes, not 10 MiB): a reference that passes
# `promptdrop check` is never refused by the server for its size.
MAX_REFERENCE_BYTES = 10_000_000
# The most references any model takes, and the default model's prompt limit; each model's own
# limits are in promptdrop.capabilities.
MAX_REFERENCES = 14
MAX_PROMPT_CHARS = 1000
MAX_COUNT = 10
# Rules files are small too; the same cap keeps a stray binary from being slurped.
MAX_RULES_FILE_BYTES = 1024 * 1024

# Every size some model takes, in capability-table order.
Size = Literal[
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "21:9",
    "1:4",
    "4:1",
    "1:8",
    "8:1",
]
# Every model id and alias, in capability-table order.
Model = Literal[
    "gemini-2.5-flash-image-preview",
    "nano-banana",
    "gemini-2.5-flash-image-official",
    "nano-banana-official",
    "gemini-3-pro-image-preview",
    "nano-banana-pro",
    "gemini-3-pro-image-preview-official",
    "nano-banana-pro-official",
    "gemini-3.1-flash-image-preview",
    "gemini-3.1-flash-image-preview-official",
    "nano-banana-2-official",
    "nano-banana-2-lite-official",
]
Resolution = Literal["0.5K", "1K", "2K", "4K"]
OutputFormat = Literal["image/png", "image/jpeg", "image/webp"]
PersonGeneration = Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"]
ThinkingLevel = Literal["LOW", "MEDIUM", "HIGH", "MINIMAL"]
SafetyCategory = Literal[
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HARASSMENT",
]
SafetyThreshold = Literal["OFF", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH"]
Orientation = Literal["landscape", "portrait"]
PollMode = Literal["auto", "always", "never"]
AccountGroup = Literal["default", "vip", "svip"]

SIZES: tuple[str, ...] = get_args(Size)
MODELS: tuple[str, ...] = get_args(Model)
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
CANONICAL_MODEL = "gemini-2.5-flash-image-preview"
DEFAULT_SIZE = "1:1"
STYLE_SEPARATOR = "\n\n"

# The keys whose value is one of a few words: the message lists them.
CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "model": MODELS,
    "orientation": ORIENTATIONS,
    "resolution": RESOLUTIONS,
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
    "max_in_flight": "a whole number from 1 to 512 (leave it out to size it from the account "
    "group)",
    "daily_budget": "a whole number, 1 or more (leave it out for no limit)",
    "reconcile_interval": "a number of seconds, 10 or more",
    "base_url": 'a web address in quotes, like "https://toapis.com"',
    "defaults": "a table of folder defaults",
    "options": "a table ([options]) of the model's extra settings",
    "api": "a table ([api])",
    "rules": "a list of [[rules]] tables",
}

# The [options] keys: what each one's value must be, as the message says it.
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "output_format": get_args(OutputFormat),
    "person_generation": get_args(PersonGeneration),
    "thinking_level": get_args(ThinkingLevel),
}
OPTION_NEEDS: dict[str, str] = {
    "compression_quality": "a whole number from 0 to 100",
    "temperature": "a number from 0 to 2",
    "top_p": "a number from 0 to 1",
    "max_output_tokens": "a whole number from 1 to 32768",
    "thinking_budget": "a whole number from 0 to 24576",
    "google_search": "true or false",
    "google_image_search": "true or false",
    "safety_settings": 'a list of tables like { category = "HARM_CATEGORY_HARASSMENT", '
    'threshold = "BLOCK_ONLY_HIGH" }',
}
