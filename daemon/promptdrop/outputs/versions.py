"""Which image of a source is current, and where the others go: a plan over a listing.

A prompt file has one current image per index, under its plain name ("poster.png", or
"poster.jpg" when the API answered JPEG). Placing a new one, or bringing a kept one back
(a revert), first moves every earlier image promptdrop made at any of the plain names to the
next free version name ("poster.v1.png"); a file promptdrop did not make is never moved or
replaced, and when it holds the plain name the image goes to a version name instead.

Pure: the caller lists what is at the plain names (and says which of those files are ours)
and performs the moves; nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from promptdrop.outputs.naming import next_version


class Found(StrEnum):
    """What a file at one of a source's plain names is."""

    CURRENT = "current"  # this very job's image: already in place
    OURS = "ours"  # an earlier image promptdrop made for this source: becomes a version
    FOREIGN = "foreign"  # not promptdrop's: never moved, never replaced


@dataclass(frozen=True)
class Move:
    src: Path
    dst: Path


@dataclass(frozen=True)
class Plan:
    """What to do, in order: the `aside` moves, then `restore` or writing to `write_to`."""

    aside: tuple[Move, ...] = ()  # earlier images to their version names
    current: Path | None = None  # this job's image is already here: nothing to write
    restore: Move | None = None  # a kept image of this request back to the plain name
    write_to: Path | None = None  # where the new image's bytes go; None: nothing to write
    # The image is (or stays) at a version name: a foreign file holds the plain name.
    displaced_by: Path | None = None

    @property
    def image(self) -> Path | None:
        """Where the job's image ends up, when this plan puts it somewhere."""
        if self.restore is not None:
            return self.restore.dst
        return self.current or self.write_to


def plan_placement(
    final: Path,
    found: Mapping[Path, Found],
    taken: Callable[[Path], bool],
    *,
    kept: Path | None = None,
) -> Plan:
    """The moves that make `final` (a plain name) this job's current image.

    `found` says what is at each plain name of this index that exists; `taken` whether any
    other name in the folder is taken (for choosing version names). With `kept` (a file
    elsewhere that already holds this job's image, such as "poster.v1.png"), that file is
    brought back to `final` instead of writing new bytes.
    """
    current = [p for p, kind in found.items() if kind is Found.CURRENT]
    allocated: set[Path] = set()

    def free(p: Path) -> bool:
        return not (p in allocated or p in found or taken(p))

    aside = []
    for path in sorted(p for p, kind in found.items() if kind is Found.OURS):
        dst = next_version(path, lambda p: not free(p))
        allocated.add(dst)
        aside.append(Move(path, dst))
    if current:
        return Plan(aside=tuple(aside), current=min(current))
    blocker = final if found.get(final) is Found.FOREIGN else None
    if kept is not None:
        if blocker is not None:
            return Plan(aside=tuple(aside), displaced_by=blocker)
        return Plan(aside=tuple(aside), restore=Move(kept, final))
    if blocker is not None:
        return Plan(
            aside=tuple(aside),
            write_to=next_version(final, lambda p: not free(p)),
            displaced_by=blocker,
        )
    return Plan(aside=tuple(aside), write_to=final)
