"""What each model of the nano-banana family accepts, as data: one row per model.

The facts come from the ToAPIs documentation pages of each model (see the README's model
table, generated from this module). Adding a model is adding a row to `MODELS`; adding a
documented parameter is adding an `Option` to `OPTIONS` and naming it in the rows that take it.

This module imports nothing from promptdrop: the checks, the schemas, the request and the
README are all built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

OptionKind = Literal["number", "integer", "boolean", "choice", "safety"]


@dataclass(frozen=True)
class Option:
    """One documented extra parameter, as written in a prompt file's `[options]` table."""

    name: str  # the key under [options]
    kind: OptionKind
    api_path: tuple[str, ...]  # where it goes inside the request's `metadata`
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HARASSMENT",
)
SAFETY_THRESHOLDS = ("OFF", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH")
OUTPUT_FORMATS = ("image/png", "image/jpeg", "image/webp")

OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option(
            "output_format",
            "choice",
            ("imageOutputOptions", "mimeType"),
            "the image format the API returns",
            choices=OUTPUT_FORMATS,
        ),
        Option(
            "compression_quality",
            "integer",
            ("imageOutputOptions", "compressionQuality"),
            'JPEG quality; only with output_format = "image/jpeg"',
            minimum=0,
            maximum=100,
        ),
        Option("temperature", "number", ("temperature",), "sampling temperature", 0.0, 2.0),
        Option("top_p", "number", ("topP",), "nucleus sampling", 0.0, 1.0),
        Option(
            "max_output_tokens",
            "integer",
            ("maxOutputTokens",),
            "output token cap (the API's default is 32768)",
            minimum=1,
            maximum=32768,
        ),
        Option(
            "person_generation",
            "choice",
            ("personGeneration",),
            "whether people may be drawn",
            choices=("ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"),
        ),
        Option(
            "safety_settings",
            "safety",
            ("safetySettings",),
            "a list of {category, threshold} tables",
        ),
        Option(
            "thinking_budget",
            "integer",
            ("thinkingConfig", "thinkingBudget"),
            "thinking tokens",
            minimum=0,
            maximum=24576,
        ),
        Option(
            "thinking_level",
            "choice",
            ("thinkingConfig", "thinkingLevel"),
            "how hard the model thinks",
            choices=("LOW", "MEDIUM", "HIGH", "MINIMAL"),
        ),
        Option(
            "google_search",
            "boolean",
            ("google_search",),
            "search the web (text) before drawing",
        ),
        Option(
            "google_image_search",
            "boolean",
            ("google_image_search",),
            "also search images; needs google_search = true",
        ),
    )
}

# Options that only make sense with another option set to a value: (option, needs, value).
NEEDS_OPTION: tuple[tuple[str, str, Any], ...] = (
    ("compression_quality", "output_format", "image/jpeg"),
    ("google_image_search", "google_search", True),
)

RESOLUTIONS = ("0.5K", "1K", "2K", "4K")
# The long edge, in pixels, of an image at each resolution (the docs' approximate figures).
LONG_EDGE = {"0.5K": 512, "1K": 1024, "2K": 2048, "4K": 4096}

_OFFICIAL_OPTIONS = (
    "output_format",
    "compression_quality",
    "temperature",
    "top_p",
    "max_output_tokens",
    "person_generation",
    "safety_settings",
)
_THINKING = ("thinking_budget", "thinking_level")
_TEN_SIZES = ("1:1", "3:2", "2:3", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@dataclass(frozen=True)
class ModelRow:
    """One model: what a prompt file may ask of it."""

    id: str
    aliases: tuple[str, ...]
    label: str  # what the docs call it
    sizes: tuple[str, ...]
    resolutions: tuple[str, ...]  # () when the docs give the model no resolution at all
    default_resolution: str | None
    orientation: bool  # whether metadata.orientation is documented (and sent)
    max_references: int
    prompt_limit: int | None  # characters, or None when the docs state no limit
    n_fixed: bool  # the docs say n is fixed at 1
    options: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The id and its aliases: every spelling of `model` that means this row."""
        return (self.id, *self.aliases)

    def shown(self) -> str:
        """The id with its first alias, as messages name a model."""
        return f"{self.id} ({self.aliases[0]})" if self.aliases else self.id


MODELS: tuple[ModelRow, ...] = (
    ModelRow(
        id="gemini-2.5-flash-image-preview",
        aliases=("nano-banana",),
        label="Nano Banana",
        sizes=("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"),
        resolutions=("1K",),
        default_resolution="1K",
        orientation=True,
        max_references=14,
        prompt_limit=1000,
        n_fixed=True,
        options=(),
    ),
    ModelRow(
        id="gemini-2.5-flash-image-official",
        aliases=("nano-banana-official",),
        label="Nano Banana (official, Vertex AI)",
        sizes=_TEN_SIZES,
        resolutions=(),
        default_resolution=None,
        orientation=False,
        max_references=3,
        prompt_limit=None,
        n_fixed=True,
        options=_OFFICIAL_OPTIONS,
    ),
    ModelRow(
        id="gemini-3-pro-image-preview",
        aliases=("nano-banana-pro",),
        label="Nano Banana Pro",
        sizes=_TEN_SIZES,
        resolutions=("1K", "2K", "4K"),
        default_resolution="1K",
        orientation=True,
        max_references=14,
        prompt_limit=None,
        n_fixed=True,
        options=(),
    ),
    ModelRow(
        id="gemini-3-pro-image-preview-official",
        aliases=("nano-banana-pro-official",),
        label="Nano Banana Pro (official, Vertex AI)",
        sizes=_TEN_SIZES,
        resolutions=("1K", "2K", "4K"),
        default_resolution="1K",
        orientation=False,
        max_references=14,
        prompt_limit=None,
        n_fixed=True,
        options=_OFFICIAL_OPTIONS + _THINKING,
    ),
    ModelRow(
        id="gemini-3.1-flash-image-preview",
        aliases=(),
        label="Nano Banana 2",
        sizes=(*_TEN_SIZES, "1:4", "4:1", "1:8", "8:1"),
        resolutions=("0.5K", "1K", "2K", "4K"),
        default_resolution="1K",
        orientation=False,
        max_references=14,
        prompt_limit=None,
        n_fixed=False,
        options=("google_search", "google_image_search"),
    ),
    ModelRow(
        id="gemini-3.1-flash-image-preview-official",
        aliases=("nano-banana-2-official", "nano-banana-2-lite-official"),
        label="Nano Banana 2 (official, Vertex AI)",
        sizes=(*_TEN_SIZES, "4:1", "8:1"),
        resolutions=("1K", "2K", "4K"),
        default_resolution="1K",
        orientation=False,
        max_references=14,
        prompt_limit=None,
        n_fixed=True,
        options=_OFFICIAL_OPTIONS + _THINKING,
    ),
)

DEFAULT_MODEL = MODELS[0].id
BY_NAME: dict[str, ModelRow] = {name: row for row in MODELS for name in row.names}
# Every spelling of every model, every size any model takes, in table order.
MODEL_NAMES: tuple[str, ...] = tuple(BY_NAME)
ALL_SIZES: tuple[str, ...] = tuple(dict.fromkeys(s for row in MODELS for s in row.sizes))
MAX_ANY_REFERENCES = max(row.max_references for row in MODELS)


def row_of(model: str | None) -> ModelRow:
    """The row of a model id or alias (None: the default model); KeyError if unknown."""
    return BY_NAME[model or DEFAULT_MODEL]


def canonical(model: str | None) -> str:
    """The model id an alias stands for (None: the default model)."""
    return row_of(model).id


def models_taking(test: Any) -> list[str]:
    """The rows (shown as id with first alias) for which `test(row)` holds, in table order."""
    return [row.shown() for row in MODELS if test(row)]


def api_metadata(
    row: ModelRow,
    resolution: str | None,
    orientation: str | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The request's `metadata` object, exactly as the model's page documents it.

    `resolution` is sent only when it differs from the model's default (so a request that
    names the default asks the API the same as one that leaves it out, and hashes the same);
    `orientation` only for models that document it; each option at its documented place.
    """
    meta: dict[str, Any] = {}
    if orientation and row.orientation:
        meta["orientation"] = orientation
    if resolution and resolution != row.default_resolution:
        meta["resolution"] = resolution
    for name in sorted(options):
        spec = OPTIONS[name]
        value = options[name]
        if spec.kind == "safety":
            value = [{"category": s["category"], "threshold": s["threshold"]} for s in value]
        node = meta
        for part in spec.api_path[:-1]:
            node = node.setdefault(part, {})
        node[spec.api_path[-1]] = value
    return meta
