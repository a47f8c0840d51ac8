"""The models the emulator serves, as the generation pages document them.

This is the emulator's own reading of the docs (toapis-models.md §1), kept apart from
promptdrop.capabilities on purpose: a mistake in the client's table is then caught by the
emulator, not mirrored by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptdrop.emulator.images import SIZES

# The long edge, in pixels, of each documented resolution ("approximate long edge" on G31).
LONG_EDGE = {"0.5K": 512, "1K": 1024, "2K": 2048, "4K": 4096}

_TEN_SIZES = ("1:1", "3:2", "2:3", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@dataclass(frozen=True)
class Model:
    """One generation page: what a request for this model may carry."""

    id: str
    aliases: tuple[str, ...]
    sizes: tuple[str, ...]
    # metadata.resolution values; empty when the page has no resolution field at all.
    resolutions: tuple[str, ...]
    orientation: bool  # metadata.orientation documented
    max_references: int
    # Declared type object[] with a required `url` (plain strings are what the examples send);
    # False: declared string[].
    reference_objects: bool
    max_prompt_chars: int | None
    max_n: int
    # The Vertex-backed pages: temperature, topP, ..., imageOutputOptions, safetySettings.
    official: bool = False
    thinking: bool = False  # metadata.thinkingConfig
    google_search: bool = False  # metadata.google_search / google_image_search
    # Documented pixel sizes per `size` (G25 only); None: long edge by resolution.
    pixels: dict[str, tuple[int, int]] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    def dimensions(self, size: str, resolution: str | None) -> tuple[int, int]:
        """The pixel size of a result for this size and resolution (None: the default)."""
        if self.pixels is not None:
            return self.pixels[size]
        long_edge = LONG_EDGE[resolution or "1K"]
        a, b = (int(part) for part in size.split(":"))
        if a >= b:
            return long_edge, _ratio_edge(long_edge, b, a)
        return _ratio_edge(long_edge, a, b), long_edge


def _ratio_edge(long_edge: int, short: int, long: int) -> int:
    """long_edge * short / long, rounded half up, in integers."""
    return (2 * long_edge * short + long) // (2 * long)


MODELS: tuple[Model, ...] = (
    Model(
        id="gemini-2.5-flash-image-preview",
        aliases=("nano-banana",),
        sizes=tuple(SIZES),
        resolutions=("1K",),
        orientation=True,
        max_references=14,
        reference_objects=True,
        max_prompt_chars=1000,
        max_n=1,
        pixels=SIZES,
    ),
    Model(
        id="gemini-2.5-flash-image-official",
        aliases=("nano-banana-official",),
        sizes=_TEN_SIZES,
        resolutions=(),
        orientation=False,
        max_references=3,
        reference_objects=False,
        max_prompt_chars=None,
        max_n=1,
        official=True,
    ),
    Model(
        id="gemini-3-pro-image-preview",
        aliases=("nano-banana-pro",),
        sizes=_TEN_SIZES,
        resolutions=("1K", "2K", "4K"),
        orientation=True,
        max_references=14,
        reference_objects=True,
        max_prompt_chars=None,
        max_n=1,
    ),
    Model(
        id="gemini-3-pro-image-preview-official",
        aliases=("nano-banana-pro-official",),
        sizes=_TEN_SIZES,
        resolutions=("1K", "2K", "4K"),
        orientation=False,
        max_references=14,
        reference_objects=False,
        max_prompt_chars=None,
        max_n=1,
        official=True,
        thinking=True,
    ),
    Model(
        id="gemini-3.1-flash-image-preview",
        aliases=(),
        sizes=(*_TEN_SIZES, "1:4", "4:1", "1:8", "8:1"),
        resolutions=("0.5K", "1K", "2K", "4K"),
        orientation=False,
        max_references=14,
        reference_objects=True,
        max_prompt_chars=None,
        # The page says "default 1" but, unlike the others, not "fixed at 1".
        max_n=4,
        google_search=True,
    ),
    Model(
        id="gemini-3.1-flash-image-preview-official",
        aliases=("nano-banana-2-lite-official", "nano-banana-2-official"),
        sizes=(*_TEN_SIZES, "4:1", "8:1"),
        resolutions=("1K", "2K", "4K"),
        orientation=False,
        max_references=14,
        reference_objects=False,
        max_prompt_chars=None,
        max_n=1,
        official=True,
        thinking=True,
    ),
)

BY_NAME: dict[str, Model] = {name: model for model in MODELS for name in model.names}
