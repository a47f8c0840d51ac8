"""Where a ledger lives, who this host is in a shared one, and how paths are stored in it."""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def default_state_dir() -> Path:
    """PROMPTDROP_STATE_DIR, else systemd's $STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop."""
    explicit = os.environ.get("PROMPTDROP_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        # systemd may pass several colon-separated folders; the first is ours.
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "promptdrop"


def default_host_id(state_dir: Path) -> str:
    """A name for this daemon in a shared ledger: the machine's name and its state directory.

    Stable across restarts (a restarted daemon recognises its own claims at once), and
    distinct for two daemons on one machine with separate state directories.
    """
    digest = hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{digest}"


class PathCodec:
    """Maps this host's absolute paths to host-independent keys, and back.

    A path under a watched root is stored as `@RULE:/path/below/root` (the rule name quoted),
    so hosts that mount the shared drive at different places name the same file the same
    way; anything else is stored as it is. The mapping keeps prefixes, so "everything below
    this folder" is still a prefix match on the stored keys. Without roots it is the identity.
    """

    def __init__(self, roots: Mapping[str, Path | str] | None = None) -> None:
        # Deepest root first: with nested roots a file belongs to the innermost one.
        self._roots = sorted(
            ((name, str(Path(root)).rstrip(os.sep)) for name, root in (roots or {}).items()),
            key=lambda item: len(item[1]),
            reverse=True,
        )
        self._by_tag = {
            "@" + urllib.parse.quote(name, safe="") + ":": root for name, root in self._roots
        }

    def __bool__(self) -> bool:
        return bool(self._roots)

    def encode(self, path: Path | str) -> str:
        text = str(path)
        for name, root in self._roots:
            if text == root or text.startswith(root + os.sep) or (not root and text == os.sep):
                rest = text[len(root) :] if text != os.sep else ""
                return "@" + urllib.parse.quote(name, safe="") + ":" + rest
        return text

    def decode(self, key: str) -> str:
        if key.startswith("@"):
            tag, colon, rest = key.partition(":")
            root = self._by_tag.get(tag + colon)
            if root is not None:
                return (root + rest) or os.sep
        return key  # not under a root this host watches: shown as stored

    def encode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._map_refs(request, self.encode)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._map_refs(request, self.decode)

    def _map_refs(self, request: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
        # Local reference images are read again for an upload by whichever host does it.
        refs = request.get("references")
        if not self or not isinstance(refs, list):
            return request
        mapped = [
            {**r, "path": fn(r["path"])}
            if isinstance(r, dict) and isinstance(r.get("path"), str)
            else r
            for r in refs
        ]
        return {**request, "references": mapped}
