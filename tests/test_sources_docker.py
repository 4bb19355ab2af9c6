"""Docker source with the real private dockerd of the ``docker_daemon`` fixture, driven over a real sshd host:
volume archives with stop/pause policies (containers always running again afterwards, also after a failed
job), and a database dump through ``docker exec`` whose password never shows up in any process's argv on the
host (a STAND-IN mysqldump inside the busybox container: tests/data/sources/mysqldump-in-container.sh)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from bot.backup import restore_db
from bot.backup.sources import PlanError
from bot.backup.sources.docker import IN_CONTAINER, DockerConfig, DockerDatabase, DockerSource, DockerSourceFacts
from bot.probes import docker as docker_probe
from bot.probes.dbcheck import DbCredential
from bot.probes.docker_db import detect_databases
from tests.harness.databases import _psql
from tests.test_sources_support import DATA, extract_stdout, run_job, source_host

__all__ = ["source_host"]
pytestmark = pytest.mark.root
WRITER = (
    'trap "exit 0" TERM; i=0; while :; do i=$((i+1)); echo $i > /data/n.tmp; mv /data/n.tmp /data/n; sleep 0.05; done'
)


def state(docker_daemon, name: str) -> tuple[str, str]:
    out = docker_daemon.cli("inspect", "--format", "{{.State.Status}} {{.State.StartedAt}}", name).stdout.split()
    return out[0], out[1]


@pytest.fixture
def app(docker_daemon):
    """A container writing a counter into a named volume every 50 ms; removed afterwards."""
    name = f"app{os.getpid()}{os.urandom(3).hex()}"
    docker_daemon.cli("volume", "create", f"{name}-data")
    docker_daemon.cli("run", "-d", "--name", name, "--network", "none", "-v", f"{name}-data:/data",
                      docker_daemon.image, "sh", "-c", WRITER)  # fmt: skip
    docker_daemon.cli("exec", name, "sh", "-c", "echo static > /data/static.txt")
    yield name
    docker_daemon.cli("rm", "-f", "-v", name, check=False)
    docker_daemon.cli("volume", "rm", "-f", f"{name}-data", check=False)


async def docker_facts(ctx_for, host, docker_daemon) -> DockerSourceFacts:
    ctx = ctx_for(host, env={"DOCKER_HOST": docker_daemon.host_url})
    return DockerSourceFacts(docker=await docker_probe.probe(ctx), host=docker_daemon.host_url)


async def test_stop_policy_freezes_the_volume_and_restarts_the_container_also_after_a_failure(
    source_host, ctx_for, docker_daemon, app
) -> None:
    host, transport, repo = source_host
    facts = await docker_facts(ctx_for, host, docker_daemon)
    config = DockerConfig(volumes=(f"{app}-data",), policies={app: "stop"}, stop_timeout=5)
    [job] = DockerSource().plan(config, facts)
    mountpoint = facts.docker.volume(f"{app}-data").mountpoint
    assert job.paths == (mountpoint,) and job.before == (("docker", "-H", docker_daemon.host_url, "stop",
                                                           "--time=5", "--", app),)  # fmt: skip
    started_before = state(docker_daemon, app)[1]
    frozen: list[str] = []

    async def during() -> None:
        assert state(docker_daemon, app)[0] == "exited"
        frozen.append(Path(mountpoint, "n").read_text())
        await asyncio.sleep(0.3)  # a running writer would have moved on by now
        assert Path(mountpoint, "n").read_text() == frozen[0]

    run = await run_job(transport, repo, job, "volume-1", during=during)
    assert run.error is None and all(r.ok for r in run.before + run.after), run
    status, started_after = state(docker_daemon, app)
    assert status == "running" and started_after != started_before
    inside = mountpoint.lstrip("/")
    assert await extract_stdout(transport, repo, "volume-1", f"{inside}/static.txt") == b"static\n"
    assert await extract_stdout(transport, repo, "volume-1", f"{inside}/n") == frozen[0].encode()
    # The job fails (an archive of that name exists): the container is running again all the same.
    failed = await run_job(transport, repo, job, "volume-1")
    assert failed.error is not None and failed.error.kind == "archive_exists"
    assert [r.ok for r in failed.before] == [True] and [r.ok for r in failed.after] == [True]
    assert state(docker_daemon, app)[0] == "running"


async def test_pause_policy_and_resume_when_before_never_ran(source_host, ctx_for, docker_daemon, app) -> None:
    host, transport, repo = source_host
    facts = await docker_facts(ctx_for, host, docker_daemon)
    [job] = DockerSource().plan(DockerConfig(volumes=(f"{app}-data",), policies={app: "pause"}), facts)

    async def during() -> None:
        assert state(docker_daemon, app)[0] == "paused"

    run = await run_job(transport, repo, job, "volume-p", during=during)
    assert run.error is None and state(docker_daemon, app)[0] == "running"
    # `after` looks at the current state: resuming a container that is already running changes nothing.
    for argv in job.after:
        assert (await transport.run(argv)).ok
    assert state(docker_daemon, app)[0] == "running"
    # A container someone stopped by hand is left alone by a "pause" resume, and started by a "stop" one.
    docker_daemon.cli("stop", "--time=5", app)
    stop_job = DockerSource().plan(DockerConfig(volumes=(f"{app}-data",), policies={app: "stop"}), facts)[0]
    assert (await transport.run(job.after[0])).ok and state(docker_daemon, app)[0] == "exited"
    assert (await transport.run(stop_job.after[0])).ok and state(docker_daemon, app)[0] == "running"


async def test_missing_volume_and_unknown_database_container_are_plan_errors(
    source_host, ctx_for, docker_daemon, app
) -> None:
    host, _, _ = source_host
    facts = await docker_facts(ctx_for, host, docker_daemon)
    with pytest.raises(PlanError, match="does not exist"):
        DockerSource().plan(DockerConfig(volumes=("no-such-volume",)), facts)
    with pytest.raises(PlanError, match="not recognised as a database server"):
        DockerSource().plan(DockerConfig(databases=(DockerDatabase(container=app),)), facts)
    assert DockerSource().validate({}) == ["choose at least one volume or database container"]
    assert any("not an environment variable name" in p for p in DockerSource().validate(
        {"databases": [{"container": "db", "password_env": "X; rm -rf /"}]}))  # fmt: skip


def argv_holding(marker: bytes) -> list[str]:
    """Command lines of host processes containing ``marker`` (as ``ps`` would show them to any user)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


async def test_database_dump_keeps_the_password_out_of_every_argv_on_the_host(source_host, docker_daemon) -> None:
    _, transport, repo = source_host
    password = f'ctr-S3cret-{os.urandom(4).hex()} "q" \\ $x'
    marker = password.split()[0].encode()
    name = f"db{os.getpid()}{os.urandom(3).hex()}"
    docker_daemon.cli("run", "-d", "--name", name, "--network", "none", "-e", f"MARIADB_ROOT_PASSWORD={password}",
                      docker_daemon.image, "sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.2; done')  # fmt: skip
    try:
        docker_daemon.cli("cp", str(DATA / "mysqldump-in-container.sh"), f"{name}:/bin/mysqldump")
        docker_daemon.cli("exec", name, "chmod", "755", "/bin/mysqldump")
        # The unsafe form: the shell in the container expands the variable into a program's argv, which the
        # host's /proc shows to every user although the host's `docker exec` argv holds only "$PW".
        unsafe = await asyncio.create_subprocess_exec(
            docker_daemon.docker_bin, "exec", name, "sh", "-c", 'exec sh -c "sleep 2; :" "$MARIADB_ROOT_PASSWORD"',
            env={**os.environ, **docker_daemon.env},
        )  # fmt: skip
        try:
            await asyncio.sleep(1.0)
            assert any("sleep 2" in line for line in argv_holding(marker)), "the unsafe form should leak"
        finally:
            await asyncio.wait_for(unsafe.wait(), 30)
        facts = DockerSourceFacts(docker=docker_probe.DockerFacts(version=docker_probe.DockerVersion(
            client_version="", client_api="")), host=docker_daemon.host_url)  # fmt: skip
        spec = DockerDatabase(container=name, engine="mariadb", databases=("shop",),
                              password_env="MARIADB_ROOT_PASSWORD")  # fmt: skip
        [job] = DockerSource().plan(DockerConfig(databases=(spec,)), facts)
        assert job.command[3:8] == ("exec", name, "sh", "-c", IN_CONTAINER) and password not in repr(job)
        dumping = asyncio.create_task(run_job(transport, repo, job, "container-1"))
        await asyncio.sleep(1.0)  # the stand-in sleeps 1.5 s: look while it runs
        leaked = argv_holding(marker)
        run = await dumping
    finally:
        docker_daemon.cli("rm", "-f", name, check=False)
    assert run.error is None, run.error
    assert leaked == [], leaked
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    options = f'!include /etc/my.cnf\n!include /etc/mysql/my.cnf\n[client]\nuser="root"\npassword="{escaped}"\n'
    dump = (await extract_stdout(transport, repo, "container-1")).decode()
    assert f"-- option file sha256: {hashlib.sha256(options.encode()).hexdigest()}" in dump
    assert "--single-transaction" in dump and dump.split("args: ")[1].split("\n")[0].endswith("-- shop")


async def test_postgres_container_dump_is_a_real_pg_dump_archive_that_restores(
    source_host, docker_daemon, postgres_db
) -> None:
    """``docker exec <c> … pg_dump -Fc`` with the user and password from the container's own variables, through
    a stand-in that runs the host's real pg_dump (tests/data/sources/pg_dump-chroot-host.sh); restored with
    :func:`bot.backup.restore_db.restore_postgresql` into a new database."""
    _, transport, repo = source_host
    postgres_db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'één'), (2, 'two')")
    name = f"pg{os.getpid()}{os.urandom(3).hex()}"
    target = f"bwtest_{os.getpid()}_{os.urandom(4).hex()}"
    docker_daemon.cli("run", "-d", "--name", name, "--network", "host", "-v", "/:/host:ro",
                      "-e", "POSTGRES_USER=postgres", "-e", "POSTGRES_PASSWORD=container secret", docker_daemon.image,
                      "sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.2; done')  # fmt: skip
    try:
        docker_daemon.cli("cp", str(DATA / "pg_dump-chroot-host.sh"), f"{name}:/bin/pg_dump")
        docker_daemon.cli("exec", name, "chmod", "755", "/bin/pg_dump")
        container = docker_probe.Container(id="0" * 64, name=name, image="postgres:15", state="running",
                                           env_names=("POSTGRES_USER", "POSTGRES_PASSWORD", "PATH"))  # fmt: skip
        version = docker_probe.DockerVersion(client_version="", client_api="")
        recognised = docker_probe.DockerFacts(version=version, containers=(container,),
                                              databases=detect_databases([container]))  # fmt: skip
        facts = DockerSourceFacts(docker=recognised, host=docker_daemon.host_url)
        [job] = DockerSource().plan(
            DockerConfig(databases=(DockerDatabase(container=name, databases=(postgres_db.name,)),)), facts
        )
        assert job.command[9:13] == ("postgresql", "+POSTGRES_USER", "+POSTGRES_PASSWORD", "+postgres")
        run = await run_job(transport, repo, job, "container-pg")
        assert run.error is None, run.error
        peer = DbCredential(engine="postgresql", auth_method="socket")
        await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("container-pg"), target, peer)
        assert _psql("SELECT v FROM t ORDER BY id", database=target).stdout.split() == ["één", "two"]
    finally:
        docker_daemon.cli("rm", "-f", name, check=False)
        _psql(f'DROP DATABASE IF EXISTS "{target}"')
