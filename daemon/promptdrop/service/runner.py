"""The daemon's entry: `run(WatchOptions)`, the phases in order.

Start-up and shutdown live in `service.lifecycle`, the main loop in `service.loop`, the
`--once` pass in `service.once`, the options and the API key in `service.config`. The names
other modules import from here (`run`, `WatchOptions`, `ConfigError`, `AlreadyRunning`,
`resolve_api_key`, `engine_options`, `rate_limits`, `scan`) stay importable from here.
"""

from __future__ import annotations

from promptdrop.api import ToApisClient
from promptdrop.jobs.engine import Engine
from promptdrop.service.config import (
    ConfigError,
    WatchOptions,
    engine_options,
    rate_limits,
    resolve_api_key,
)
from promptdrop.service.lifecycle import (
    AlreadyRunning,
    close_ledger,
    open_for,
    recover,
    require_folders,
    state_lock,
)
from promptdrop.service.loop import main_loop
from promptdrop.service.once import run_once
from promptdrop.service.sdnotify import Notifier
from promptdrop.watch.scan import scan

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "WatchOptions",
    "engine_options",
    "rate_limits",
    "resolve_api_key",
    "run",
    "scan",
]


async def run(opts: WatchOptions) -> int:
    """Run the daemon (or one pass with --once); return the process exit code.

    The phases: start-up (`lifecycle`: folders, lock, ledger, recovery), then the main loop
    (`loop.main_loop`) or the single pass (`once.run_once`), then shutdown. Raises ConfigError
    for what the user must fix, AlreadyRunning when another daemon has the state directory.
    """
    await require_folders(opts.rules.rules, from_rules_file=opts.from_rules_file, once=opts.once)
    notifier = Notifier()
    with state_lock(opts.state_dir):
        try:
            ledger, host = open_for(opts, notifier)
        except ConfigError:
            notifier.close()
            raise
        try:
            await recover(ledger, host, opts.rules.rules)
            api = opts.rules.api
            async with ToApisClient(
                opts.api_key,
                opts.base_url,
                account_group=api.account_group,
                rate_limits=rate_limits(api),
                timeout=api.timeout,
            ) as client:
                engine = Engine(
                    ledger,
                    client,
                    opts.rules.rules,
                    engine_options(opts),
                    prices=opts.rules.prices,
                )
                engine.host = host
                metrics = None
                if opts.metrics:
                    # Imported here: the metrics module (and prometheus-client) only when asked.
                    from promptdrop.service.metrics import Metrics, start_metrics

                    try:
                        metrics = start_metrics(opts.metrics, Metrics(engine))
                    except OSError as exc:  # its words say what to do: another port
                        raise ConfigError(exc.strerror or str(exc)) from None
                try:
                    if opts.once:
                        return await run_once(engine, opts, scan)
                    return await main_loop(engine, opts, notifier)
                finally:
                    if metrics is not None:
                        metrics.close()
        finally:
            close_ledger(ledger, host)
            notifier.close()
