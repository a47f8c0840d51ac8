"""Reference images: resolving what a file lists into local files (inside the watched folder, at
most 10 MB, really JPEG, PNG or WebP, hashed) or web addresses, or saying what is wrong."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from promptdrop import imaging
from promptdrop.filecheck.fields import MAX_REFERENCE_BYTES
from promptdrop.filecheck.locate import locate
from promptdrop.filecheck.problems import Problem, SpecError
from promptdrop.filecheck.reading import human, kind_of, read_bytes
from promptdrop.filecheck.refform import is_url_like, reference_form_problem
from promptdrop.spec.containment import inside
from promptdrop.spec.request import Reference

RULE_DEFAULTS_PREFIX = "the rule's [rules.defaults]: "


@dataclass(frozen=True)
class Refusal:
    """What is wrong with one reference; `missing` is the path looked for when it is a local
    file that does not exist (yet)."""

    message: str
    missing: Path | None = None


def resolve_reference(source: str, base: Path, root: Path) -> Reference | str:
    """Turn one reference into a Reference, or return what is wrong with it.

    `base` (the folder of the file that lists it) and `root` are resolved paths. A local file
    must stay inside the root both as written (no `..` out of it) and after following symlinks,
    be a regular file of at most 10 MB and decode as JPEG, PNG or WebP.
    """
    ref = resolve(source, base, root)
    return ref.message if isinstance(ref, Refusal) else ref


def resolve(source: str, base: Path, root: Path) -> Reference | Refusal:
    """`resolve_reference`, telling a local file that does not exist apart from other refusals."""
    form = reference_form_problem(source)
    if form:
        return Refusal(form)
    if is_url_like(source):
        return Reference(source=source, kind="url", url=source)
    lexical = Path(os.path.normpath(base / source))
    if not inside(lexical, root):
        return Refusal(
            f"reference '{source}' points outside the watched folder; use images inside it"
        )
    real = lexical.resolve()
    if not inside(real, root):
        return Refusal(
            f"reference '{source}' is a link that leads outside the watched folder; copy "
            "the image into the folder instead"
        )
    data = _image_bytes(source, lexical, real)
    if isinstance(data, Refusal):
        return data
    ref = _image_reference(source, real, data)
    return Refusal(ref) if isinstance(ref, str) else ref


def _image_bytes(source: str, lexical: Path, real: Path) -> bytes | Refusal:
    """The bytes of a local reference of at most 10 MB, or what is wrong with the file."""
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return Refusal(f"reference '{source}' was not found (looked for {lexical})", lexical)
    except OSError as exc:
        return Refusal(f"reference '{source}' cannot be read ({exc.strerror})")
    if not stat.S_ISREG(st.st_mode):
        return Refusal(f"reference '{source}' is {kind_of(st.st_mode)}, not an image file")
    if st.st_size > MAX_REFERENCE_BYTES:
        return Refusal(
            f"reference '{source}' is {st.st_size:,} bytes ({human(st.st_size)}); the API "
            f"takes images up to 10 MB ({MAX_REFERENCE_BYTES:,} bytes). Make it smaller"
        )
    try:
        return read_bytes(real, MAX_REFERENCE_BYTES, "reference")
    except SpecError as exc:
        return Refusal(f"reference '{source}': {exc.problems[0].message}")


def _image_reference(source: str, real: Path, data: bytes) -> Reference | str:
    """A local reference whose bytes are a JPEG, PNG or WebP image that opens."""
    fmt = imaging.sniff(data)
    if fmt == "gif":
        return (
            f"reference '{source}' is a GIF image; the API takes only JPEG, PNG and WebP. "
            "Save it in one of those formats"
        )
    if fmt is None:
        return (
            f"reference '{source}' is not a JPEG, PNG or WebP image (whatever its name "
            "says); the API takes only those"
        )
    try:
        info = imaging.inspect(data)
    except imaging.ImageError:
        return (
            f"reference '{source}' looks like a {fmt.upper()} image but does not open; it "
            "may be damaged or still copying"
        )
    return Reference(
        source=source,
        kind="file",
        path=real,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        format=info.format,
    )


def resolve_listed(
    sources: Iterable[str], base: Path, root_real: Path, path: Path, text: str
) -> tuple[list[Reference], list[Problem]]:
    """Resolve one file's references list, every problem located at its `references` key.

    `text` is that file's text; empty for a rule's `[rules.defaults]`, which has no file of its
    own here, so its problems say where the reference came from instead. Entries with a form
    problem are skipped: that was reported when the file was validated.
    """
    references: list[Reference] = []
    problems: list[Problem] = []
    line, col = locate(text, "references") if text else (None, None)
    prefix = "" if text else RULE_DEFAULTS_PREFIX
    for source in sources:
        if reference_form_problem(source):
            continue  # already reported
        ref = resolve(source, base, root_real)
        if isinstance(ref, Refusal):
            problems.append(Problem(path, prefix + ref.message, line, col, ref.missing))
        else:
            references.append(ref)
    return references, problems
