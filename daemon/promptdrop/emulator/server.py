"""The Emulator: two local HTTP servers (API and files) behaving like ToAPIs."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from promptdrop.emulator.config import EmulatorConfig
from promptdrop.emulator.faults import Faults
from promptdrop.emulator.handlers import ApiHandler, FilesHandler
from promptdrop.emulator.serving import EmulatorServer, EmulatorServer6
from promptdrop.emulator.state import EmulatorState

# How often the serve loops look for stop(): the upper bound on stop()'s wait.
_POLL_INTERVAL = 0.02


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Emulator:
    """A local stand-in for the ToAPIs image API.

    `Emulator(config).start()` listens on two origins (API and files) and returns self;
    `stop()` closes both and every open connection. Also a context manager.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._state = EmulatorState(self.config)
        self._stopping = threading.Event()
        self._servers: list[EmulatorServer] = []
        self._threads: list[threading.Thread] = []
        self._base_url: str | None = None
        self._files_url: str | None = None

    def start(self) -> Emulator:
        """Bind both ports and serve in daemon threads; raise OSError if a port is taken."""
        if self._servers:
            raise RuntimeError("the emulator is already running")
        cfg = self.config
        server_class = EmulatorServer6 if ":" in cfg.host else EmulatorServer
        self._stopping.clear()
        api = server_class((cfg.host, cfg.port), ApiHandler, self._state, self._stopping)
        try:
            files = server_class(
                (cfg.host, cfg.files_port), FilesHandler, self._state, self._stopping
            )
        except BaseException:
            api.server_close()
            raise
        host = _url_host(cfg.host)
        self._base_url = f"http://{host}:{api.server_port}"
        self._files_url = f"http://{host}:{files.server_port}"
        self._state.files_url = self._files_url
        self._servers = [api, files]
        for name, server in (("api", api), ("files", files)):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"promptdrop-emulator-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, close the ports and end open connections; safe to call twice."""
        self._stopping.set()  # wakes requests held by the "slow" fault
        # shutdown() waits up to a poll interval per server: wait for both at once.
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self._servers:
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> Emulator:
        if not self._servers:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API origin, e.g. "http://127.0.0.1:8787" (after start())."""
        if self._base_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._base_url

    @property
    def files_url(self) -> str:
        """The files origin (another port), where result and upload URLs point."""
        if self._files_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._files_url

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._state.faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; applies to every request from now on."""
        self._state.set_faults(faults)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the stats (see CONTRACTS.md for the keys)."""
        return self._state.stats()

    def reset_stats(self) -> None:
        """Clear the stats; tasks and uploads stay."""
        self._state.reset_stats()

    def reset(self) -> None:
        """Clear stats, tasks, uploads and rate windows (what POST /_emulator/reset does)."""
        self._state.reset()
