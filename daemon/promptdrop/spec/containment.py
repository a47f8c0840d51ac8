"""What counts as inside the watched folder: the prompt file, its defaults and its references
must all be, both as written and after following links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from promptdrop.filecheck.problems import fail


def inside(path: Path, root: Path) -> bool:
    """Whether `path` is `root` or below it (both as given: resolve them first for links)."""
    return path == root or root in path.parents


def check_inside_root(path: Path, root_real: Path, what: str) -> Path:
    """The resolved path of a file that must exist inside the (resolved) root; raise SpecError
    saying why not, naming a link that leads out as one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise fail(path, f"the {what} was not found") from None
    except OSError as exc:
        raise fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    real = path.absolute().resolve()
    if not inside(real, root_real):
        if stat.S_ISLNK(st.st_mode):
            raise fail(
                path,
                f"the {what} is a link that leads outside the watched folder; "
                "copy the file into the folder instead",
            )
        raise fail(path, f"the {what} is not inside the watched folder {root_real}")
    return real
