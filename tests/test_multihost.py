"""Several daemons sharing one PostgreSQL ledger, as hosts watching one synced drive would.

Real daemons (separate state directories, so separate host names in the ledger), one real
throwaway PostgreSQL server, the emulator over TCP, one real folder. Where the system allows it
(root), the second and third daemon see the folder through bind mounts at other paths, as
hosts that mount a shared drive at different places do.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgserver
from harness import (
    CANARY,
    Daemon,
    cli,
    daemon_env,
    image_for,
    rules_file,
    spawn,
    stop_all,
    wait_for,
    write_prompt,
)
from pgserver import PgServer, outage
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.ledger import default_host_id

pg_server = pgserver.pg_server  # the fixture, for this module's tests
HOSTS = 3


@contextlib.contextmanager
def mounts(folder: Path, base: Path, count: int) -> Iterator[list[Path]]:
    """`folder` seen at `count` different paths: bind mounts when allowed, else itself."""
    views = [folder]
    mounted: list[Path] = []
    try:
        for n in range(1, count):
            view = base / f"mnt{n}"
            view.mkdir()
            done = subprocess.run(
                ["mount", "--bind", str(folder), str(view)], capture_output=True, check=False
            )
            if done.returncode == 0:
                mounted.append(view)
                views.append(view)
            else:
                views.append(folder)
        yield views
    finally:
        for view in mounted:
            subprocess.run(["umount", "-l", str(view)], check=False)


class Cluster:
    """Three daemons on one folder and one ledger URL."""

    def __init__(self, tmp: Path, emu: Emulator, url: str, views: list[Path]) -> None:
        self.tmp, self.emu, self.url, self.views = tmp, emu, url, views
        self.folder = views[0]
        self.daemons: list[Daemon] = []
        self.states = [tmp / f"state{n}" for n in range(len(views))]

    def start(self, n: int, lease_time: float) -> Daemon:
        rules = rules_file(
            self.tmp / f"rules{n}.toml",
            self.views[n],
            settle=0.2,
            max_in_flight=8,
            account_group="svip",
        )
        args: tuple[str, ...] = ("--lease-time", str(lease_time))
        if n == len(self.views) - 1:
            # The last one has the URL in its rules file; the others get it as --ledger.
            rules.write_text(f"ledger = {json.dumps(self.url)}\n" + rules.read_text())
        else:
            args += ("--ledger", self.url)
        daemon = spawn(
            rules,
            self.states[n],
            daemon_env(self.emu.base_url),
            cwd=self.tmp,
            name=f"host{n}",
            args=args,
        )
        self.daemons.append(daemon)
        return daemon

    def start_all(self, lease_time: float = 30.0) -> list[Daemon]:
        started = [self.start(n, lease_time) for n in range(len(self.views))]
        for daemon in started:
            daemon.wait_watching(timeout=30)
        return started

    def drop(self, count: int) -> list[Path]:
        return [
            write_prompt(self.folder / f"p{i:03}.prompt.toml", f"picture number {i}")
            for i in range(count)
        ]

    def submitted(self) -> Counter[str]:
        return Counter(s["prompt"] for s in self.emu.stats()["submissions"])

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(sql, params).fetchall())

    def states_by_job(self) -> dict[int, str]:
        return {int(r[0]): str(r[1]) for r in self.rows("SELECT id, state FROM jobs")}

    def writes(self) -> Counter[str]:
        """How often each image file was written, over all daemons' logs."""
        found: Counter[str] = Counter()
        for daemon in self.daemons:
            for event in daemon.events():
                if event.get("event") == "image written":
                    found[Path(str(event["file"])).name] += 1
        return found


@pytest.fixture
def cluster(tmp_path: Path, pg_server: PgServer) -> Iterator[Cluster]:
    folder = tmp_path / "drop"
    folder.mkdir()
    with (
        Emulator(EmulatorConfig(api_key=CANARY, latency=0.5, jitter=0.0, rate_limits=None)) as emu,
        mounts(folder, tmp_path, HOSTS) as views,
    ):
        c = Cluster(tmp_path, emu, pg_server.new_schema(), views)
        try:
            yield c
        finally:
            stop_all(c.daemons, kill=True)


def _all_images(sources: list[Path]) -> bool:
    return all(image_for(s) is not None for s in sources)


def test_three_daemons_on_one_folder_submit_each_file_once_and_write_each_image_once(
    cluster: Cluster,
) -> None:
    daemons = cluster.start_all()
    sources = cluster.drop(200)
    wait_for(lambda: _all_images(sources), "an image for each of the 200 files", timeout=120)
    wait_for(
        lambda: set(cluster.states_by_job().values()) == {"done"}, "every job done", timeout=30
    )

    submitted = cluster.submitted()
    assert len(submitted) == 200
    assert set(submitted.values()) == {1}  # each request paid exactly once
    writes = cluster.writes()
    assert len(writes) == 200 and set(writes.values()) == {1}  # each image written once
    images = [p for p in cluster.folder.iterdir() if not p.name.endswith(".toml")]
    assert len(images) == 200  # no second copies, no notes
    by_host = [sum(1 for e in d.events() if e.get("event") == "submitted") for d in daemons]
    assert sum(by_host) == 200

    # `status` and `retry` on any host, with that host's own paths.
    last = len(cluster.views) - 1
    env = daemon_env(cluster.emu.base_url)
    shown = cli(
        "status",
        "--json",
        "--ledger",
        cluster.url,
        "--state-dir",
        str(cluster.states[last]),
        env=env,
        cwd=cluster.tmp,
    )
    assert shown.returncode == 0, shown.stderr
    jobs = json.loads(shown.stdout)["jobs"]
    assert len(jobs) == 200
    assert all(
        j["sources"] == [str(cluster.views[last] / Path(j["sources"][0]).name)] for j in jobs
    )
    again = cluster.views[last] / sources[7].name
    redo = cli(
        "retry",
        "--force",
        "--ledger",
        cluster.url,
        "--state-dir",
        str(cluster.states[last]),
        str(again),
        env=env,
        cwd=cluster.tmp,
    )
    assert redo.returncode == 0, redo.stderr
    wait_for(
        lambda: cluster.submitted()["picture number 7"] == 2,
        "the retried file to be sent",
        timeout=30,
    )
    wait_for(
        lambda: cluster.writes()["p007.png"] == 2, "the retried image to be written", timeout=30
    )
    time.sleep(1.0)
    assert cluster.submitted()["picture number 7"] == 2  # sent once more, by one host only
    assert sum(cluster.submitted().values()) == 201
    assert all(d.proc.poll() is None for d in daemons)


def test_a_killed_daemons_running_tasks_are_finished_by_the_others_without_resubmitting(
    cluster: Cluster,
) -> None:
    lease = 3.0
    daemons = cluster.start_all(lease_time=lease)
    victim, victim_host = daemons[0], default_host_id(cluster.states[0])
    sources = cluster.drop(60)

    def victims_running() -> list[int]:
        return [
            int(r[0])
            for r in cluster.rows(
                "SELECT jobs.id FROM jobs JOIN leases ON leases.job_id = jobs.id"
                " WHERE leases.host = %s AND jobs.state = 'running'",
                (victim_host,),
            )
        ]

    held = wait_for(victims_running, "the first daemon to have running tasks", timeout=60)
    victim.kill()
    killed_at = time.monotonic()
    # Its tasks are polled by the others once its claims expire, and their images written.
    wait_for(
        lambda: all(cluster.states_by_job().get(j) == "done" for j in held),
        "the killed daemon's running tasks to be finished",
        timeout=30,
    )
    assert time.monotonic() - killed_at < lease + lease / 3 + 6  # expiry, renew tick, a poll
    wait_for(
        lambda: set(cluster.states_by_job().values()) <= {"done", "ambiguous"},
        "every job to end",
        timeout=120,
    )

    submitted = cluster.submitted()
    assert max(submitted.values()) == 1  # nothing sent twice
    states = cluster.states_by_job()
    ambiguous = [j for j, s in states.items() if s == "ambiguous"]
    # Only a submission the victim had started (intent committed, answer not recorded) can be
    # ambiguous: it may or may not have left, so it is never sent again. Everything else is
    # done, sent exactly once.
    assert len(ambiguous) <= 8
    assert len(states) - len(ambiguous) <= len(submitted) <= len(states)
    done_sources = [s for s in sources if image_for(s) is not None]
    assert len(done_sources) == len(states) - len(ambiguous)
    assert set(cluster.writes().values()) == {1}
    assert all(d.proc.poll() is None for d in daemons[1:])


def test_the_daemons_wait_out_a_10_second_database_outage_and_finish_without_resubmitting(
    cluster: Cluster, pg_server: PgServer
) -> None:
    daemons = cluster.start_all()
    sources = cluster.drop(60)
    wait_for(lambda: len(cluster.submitted()) >= 10, "some submissions", timeout=60)
    with outage(pg_server, 10.0):
        time.sleep(1.0)
        assert all(d.proc.poll() is None for d in daemons)
    wait_for(lambda: _all_images(sources), "an image for each file after the outage", timeout=120)
    wait_for(
        lambda: set(cluster.states_by_job().values()) == {"done"}, "every job done", timeout=30
    )
    submitted = cluster.submitted()
    assert len(submitted) == 60 and set(submitted.values()) == {1}
    assert set(cluster.writes().values()) == {1}
    assert all(d.proc.poll() is None for d in daemons)  # they waited; none gave up
    assert any("lost the connection to the shared ledger" in d.log() for d in daemons)


def test_a_rules_file_names_the_shared_ledger_and_a_wrong_one_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    from promptdrop.spec import SpecError, read_rules

    path = tmp_path / "rules.toml"
    body = f'[[rules]]\nname = "drop"\npath = {json.dumps(str(tmp_path))}\n'
    path.write_text('ledger = "postgresql://pd@db.example/pd"\n' + body)
    assert read_rules(path).ledger == "postgresql://pd@db.example/pd"
    path.write_text(body)
    assert read_rules(path).ledger is None  # the default: SQLite on this computer
    path.write_text('ledger = "mysql://pd:s3cret@db.example/pd"\n' + body)
    with pytest.raises(SpecError) as caught:
        read_rules(path)
    assert "PostgreSQL URL" in str(caught.value) and "s3cret" not in str(caught.value)
