"""Files promptdrop puts into users' folders: names, atomic no-clobber writes, provenance, notes.

This package never decides whether a file should be written (the engine does, with the ledger);
it guarantees how: every file appears under its final name in one step, complete, and never
replaces a file that is already there. Work in progress lives in hidden temporary files named
``.promptdrop-tmp-*`` in the same folder, which sync clients and our own watcher ignore and which
`cleanup_temps` removes after a crash.

One module per concern, re-exported here: `naming` (pure: which name a file gets), `atomic`
(how it is written), `provenance` (what the image says about itself), `notes` (error notes).
"""

from __future__ import annotations

from promptdrop.outputs import atomic, naming, notes, provenance
from promptdrop.outputs.atomic import cleanup_temps, copy_atomic, move_no_clobber, write_atomic
from promptdrop.outputs.naming import (
    NAME_MAX_BYTES,
    NOTE_SUFFIX,
    TEMP_PREFIX,
    StrPath,
    is_own_temp,
    note_path,
    output_path,
    source_stem,
    versioned_name,
    versioned_path,
)
from promptdrop.outputs.notes import NOTE_MARKER, clear_note, is_own_note, write_note
from promptdrop.outputs.provenance import read_provenance, with_provenance

__all__ = [
    "NAME_MAX_BYTES",
    "NOTE_MARKER",
    "NOTE_SUFFIX",
    "TEMP_PREFIX",
    "StrPath",
    "atomic",
    "cleanup_temps",
    "clear_note",
    "copy_atomic",
    "is_own_note",
    "is_own_temp",
    "move_no_clobber",
    "naming",
    "note_path",
    "notes",
    "output_path",
    "provenance",
    "read_provenance",
    "source_stem",
    "versioned_name",
    "versioned_path",
    "with_provenance",
    "write_atomic",
    "write_note",
]
