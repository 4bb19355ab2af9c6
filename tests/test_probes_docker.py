"""The Docker probe: real dockerd (private, vfs) reached through a real sshd, plus parsers on recorded output.

Real: the ``docker_daemon`` fixture's daemon and busybox image, queried over SSH from the probe as it runs in
production (``DOCKER_HOST`` through ``ProbeContext.env``); a non-root SSH login outside the docker group; a
socket that does not exist; a PATH without docker. Recorded (``tests/data/probes/docker_real/``, see its
NOTES.md): outputs of docker 20.10 and 28.2 clients, used to pin the parsers to both formats, and two error
lines of docker ≥ 29 quoted from public bug reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from bot.probes import docker
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.docker_db import credentials_source, engine_of, image_repository
from bot.probes.docker_models import Container
from bot.probes.docker_parse import (
    parse_containers,
    parse_df_volume_sizes,
    parse_du,
    parse_human_size,
    parse_ids,
    parse_names,
    parse_version,
    parse_volumes,
)
from bot.transport import SSHPool, SSHTarget
from bot.transport.base import CommandResult, Transport

DATA = Path(__file__).parent / "data" / "probes" / "docker_real"
SECRET = "s3cret-value"  # the value given to the database container; must never reach the bot
RECORDED_SECRETS = ("s3cret-value", "hunter2", "secretdsn")  # fake values inside the recorded full inspect


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# --- parsers on recorded real output ---------------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["cli20", "cli28"])
def test_version_with_and_without_daemon(cli: str) -> None:
    ok = parse_version(recorded(f"version.{cli}.json"))
    assert ok.server_version == "20.10.24+dfsg1" and ok.server_api == "1.41"
    assert ok.client_version == {"cli20": "20.10.24+dfsg1", "cli28": "28.2.2"}[cli]
    down = parse_version(recorded(f"version_daemon_down.{cli}.out"))
    assert down.client_version and down.server_version == ""


def test_version_accepts_podmans_field_spelling() -> None:
    text = json.dumps({"Client": {"APIVersion": "5.4.2", "Version": "5.4.2"}, "Server": None})
    assert parse_version(text).client_api == "5.4.2"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("daemon_down.cli20.err", "daemon-down"),
        ("daemon_down.cli28.err", "daemon-down"),
        ("permission_denied.cli20.err", "permission-denied"),
        ("permission_denied.cli28.err", "permission-denied"),
    ],
)
def test_daemon_problems_are_recognised(name: str, reason: str) -> None:
    problem = docker.daemon_problem(recorded(name))
    assert problem is not None and problem.reason == reason
    assert "unix:///tmp/dexp/" in str(problem)  # names the address docker tried


def test_daemon_problems_of_docker_29_wording() -> None:
    down, denied = recorded("errors_docker29.txt").splitlines()
    assert docker.daemon_problem(down).reason == "daemon-down"  # type: ignore[union-attr]
    assert docker.daemon_problem(denied).reason == "permission-denied"  # type: ignore[union-attr]
    assert "unix:///var/run/docker.sock" in str(docker.daemon_problem(down))
    unrelated = "WARNING: Error loading config file: /root/.docker/config.json: open: permission denied\nboom"
    assert docker.daemon_problem(unrelated) is None


def _by_name(containers: Sequence[Container]) -> dict[str, Container]:
    return {c.name: c for c in containers}


def test_containers_from_both_clients_and_from_full_inspect_agree() -> None:
    ids = parse_ids(recorded("ps_ids.txt"))
    new = parse_containers(recorded("container_inspect.cli28.jsonl"))
    old = parse_containers(recorded("container_inspect.cli20.jsonl"))
    full = parse_containers(recorded("container_inspect_full.json"))
    assert new == old == full
    assert {c.id for c in new} == set(ids) and len(ids) == 6
    web = _by_name(new)["shop-web-1"]
    assert web.labels["weird"] == "a,b=c"  # `docker ps` would have joined this with commas, ambiguously
    assert (web.compose_project, web.compose_service, web.state, web.running) == ("shop", "web", "running", True)
    volume, bind = sorted(web.mounts, key=lambda m: m.type, reverse=True)
    assert (volume.type, volume.name, volume.destination, volume.rw, volume.driver) == (
        "volume", "shop_data", "/data", True, "local"
    )  # fmt: skip
    assert (bind.type, bind.name, bind.source, bind.destination, bind.rw) == (
        "bind", "", "/tmp/dexp/rootfs/etc", "/hostetc", False
    )  # fmt: skip
    assert web.created is not None and web.created.year == 2026 and web.finished_at is None
    stopped = _by_name(new)["stopped1"]
    assert (stopped.state, stopped.exit_code, stopped.running) == ("exited", 0, False)
    assert stopped.status.startswith("exited (0) at 2026-11-26")
    assert _by_name(new)["pg"].env_names == ("POSTGRES_PASSWORD", "PGDATA")


def test_full_inspect_keeps_env_names_and_drops_values() -> None:
    raw = recorded("container_inspect_full.json")
    assert all(secret in raw for secret in RECORDED_SECRETS)  # the sample really holds them
    dumped = json.dumps([c.model_dump(mode="json") for c in parse_containers(raw)]) + repr(parse_containers(raw))
    assert not [s for s in RECORDED_SECRETS if s in dumped]


@pytest.mark.parametrize("cli", ["cli20", "cli28"])
def test_volume_sizes_from_system_df(cli: str) -> None:
    sizes = parse_df_volume_sizes(recorded(f"system_df_v.{cli}.json"))
    assert sizes == {"shop_data": 1_235_000_000, "other.vol": 3000, "4f1e2d3c": 0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0B", 0), ("3kB", 3000), ("1.235GB", 1_235_000_000), ("12.5MB", 12_500_000), ("999.9kB", 999_900),
     ("N/A", None), ("-1B", None), ("", None), ("12 apples", None)],
)  # fmt: skip
def test_human_sizes(text: str, expected: int | None) -> None:
    assert parse_human_size(text) == expected


def test_volumes_du_and_names() -> None:
    volumes = {v.name: v for v in parse_volumes(recorded("volume_inspect.json"))}
    assert set(volumes) == set(parse_names(recorded("volume_names.txt"))) == {"4f1e2d3c", "other.vol", "shop_data"}
    assert volumes["shop_data"].labels == {"com.docker.compose.project": "shop", "com.docker.compose.volume": "data"}
    assert volumes["other.vol"].labels == {}  # "Labels": null
    assert volumes["shop_data"].mountpoint == "/tmp/dexp/data/volumes/shop_data/_data"
    du = parse_du(recorded("du.out"))
    assert du["/tmp/dexp/data/volumes/shop_data/_data"] == 1_234_575_195
    assert "/tmp/dexp/nonexistent" not in du


def test_assembled_from_recorded_outputs() -> None:
    containers = parse_containers(recorded("container_inspect.cli28.jsonl"))
    facts = docker.assemble(
        parse_version(recorded("version.cli28.json")), containers, parse_volumes(recorded("volume_inspect.json"))
    )
    assert facts.volume("shop_data").used_by == ("maria", "shop-web-1")  # type: ignore[union-attr]
    assert facts.volume("4f1e2d3c").used_by == ()  # type: ignore[union-attr]
    (shop,) = facts.projects
    assert (shop.name, shop.services, shop.containers, shop.volumes, shop.working_dir) == (
        "shop", ("db", "web"), ("maria", "shop-web-1"), ("shop_data",), "/srv/shop"
    )  # fmt: skip
    dbs = {d.container: d for d in facts.databases}
    assert set(dbs) == {"pg", "maria", "appdb"}  # not the exporter, not busybox
    assert (dbs["pg"].engine, dbs["pg"].detected_by, dbs["pg"].credentials) == ("postgresql", "image", "env")
    assert (dbs["maria"].engine, dbs["maria"].credentials, dbs["maria"].volumes) == ("mariadb", "file", ("shop_data",))
    assert dbs["maria"].credential_env == ("MARIADB_ROOT_PASSWORD_FILE",) and dbs["maria"].compose_project == "shop"
    assert (dbs["appdb"].engine, dbs["appdb"].detected_by) == ("mongodb", "port")


@pytest.mark.parametrize(
    ("image", "ports", "engine"),
    [
        ("postgres:16-alpine", (), "postgresql"),
        ("docker.io/bitnami/postgresql:16.3.0", (), "postgresql"),
        ("postgis/postgis:16-3.4", (), "postgresql"),
        ("timescale/timescaledb-ha:pg16", (), "postgresql"),
        ("mariadb:11", (), "mariadb"),
        ("lscr.io/linuxserver/mariadb:latest", (), "mariadb"),
        ("mysql:8.4", (), "mysql"),
        ("container-registry.oracle.com/mysql/mysql-server:8.0", (), "mysql"),
        ("percona/percona-server:8.0", (), "mysql"),
        ("mongo", (), "mongodb"),
        ("mongodb/mongodb-community-server:7.0-ubi8", (), "mongodb"),
        ("percona/percona-server-mongodb:7.0", (), "mongodb"),
        ("postgres@sha256:" + "a" * 64, (), "postgresql"),
        ("registry.local:5000/acme/orders:3", ("3306/tcp",), "mysql"),
        ("registry.local:5000/acme/orders:3", ("5432/tcp", "8080/tcp"), "postgresql"),
        ("mongo-express:1", ("8081/tcp",), None),
        ("prometheuscommunity/postgres-exporter", ("9187/tcp",), None),
        ("mysql/mysql-router:8.0", ("6446/tcp", "3306/tcp"), None),
        ("prodrigestivill/postgres-backup-local:16", (), None),
        ("dpage/pgadmin4", ("80/tcp",), None),
        ("nginx:1.27", ("80/tcp",), None),
        ("sha256:" + "b" * 64, (), None),
    ],
)
def test_database_engine_from_image_and_ports(image: str, ports: tuple[str, ...], engine: str | None) -> None:
    container = Container(id="c" * 64, name="x", image=image, state="running", ports=ports)
    found = engine_of(container)
    assert (found[0] if found else None) == engine


def test_image_repository() -> None:
    assert image_repository("docker.io/library/postgres:16") == ("postgres", "16")
    assert image_repository("localhost:5000/db/MariaDB@sha256:" + "c" * 64) == ("db/mariadb", "")
    assert image_repository("bitnami/postgresql") == ("bitnami/postgresql", "")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("MYSQL_ROOT_PASSWORD", "MYSQL_DATABASE"), "env"),
        (("POSTGRES_PASSWORD_FILE", "POSTGRES_USER"), "file"),
        (("MYSQL_RANDOM_ROOT_PASSWORD",), "none"),
        (("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD",), "none"),
        (("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"), "env"),
        (("PGPASSWORD",), "env"),
        (("PATH", "LANG"), "none"),
    ],
)
def test_credentials_source(names: tuple[str, ...], expected: str) -> None:
    assert credentials_source(names) == expected


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_version, "<html>Bad Gateway</html>"),
        (parse_version, '{"Version": "1"}'),
        (parse_containers, "Error: something odd happened SECRET-LOOKING-OUTPUT"),
        (parse_containers, "[1, 2]"),
        (parse_containers, '{"Foo": 1}'),
        (parse_volumes, '[{"Driver": "local"}]'),
        (parse_ids, "CONTAINER ID   IMAGE\nabc  busybox"),
        (parse_df_volume_sizes, "TYPE  TOTAL  ACTIVE\nImages 1 1"),
    ],
)
def test_garbage_is_a_probe_error_that_does_not_echo_the_output(parse, text: str) -> None:
    with pytest.raises(ProbeError) as caught:
        parse(text)
    assert "docker" in str(caught.value).lower()
    assert "SECRET-LOOKING-OUTPUT" not in str(caught.value) and "Bad Gateway" not in str(caught.value)


# --- the sudo retry, with a scripted transport ---------------------------------------------------------------


@dataclass
class ScriptedTransport:
    """Answers like a host where the login user is outside the docker group but has passwordless sudo."""

    name: str = "scripted"
    calls: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)

    async def run(self, argv: Sequence[str], *, sudo: bool = False, **kwargs: object) -> CommandResult:
        self.calls.append((tuple(argv), sudo))
        if sudo:
            return CommandResult(tuple(argv), 0, recorded("version.cli28.json").encode(), b"")
        return CommandResult(tuple(argv), 1, b"", recorded("permission_denied.cli28.err").encode())

    async def close(self) -> None:
        return None


async def test_permission_denied_is_retried_through_passwordless_sudo() -> None:
    transport = ScriptedTransport()
    version, via_sudo = await docker.connect(ProbeContext(transport=transport, sudo=True))
    assert via_sudo and version.server_version == "20.10.24+dfsg1"
    assert [sudo for _, sudo in transport.calls] == [False, True]
    with pytest.raises(docker.DockerUnavailable) as caught:
        await docker.connect(ProbeContext(transport=ScriptedTransport(), sudo=False, privileged=False))
    assert caught.value.reason == "permission-denied" and "`docker` group" in str(caught.value)


# --- real dockerd over real SSH ------------------------------------------------------------------------------


@dataclass
class RecordingTransport:
    """Passes commands to a real transport and keeps every result, to prove what crossed the wire."""

    inner: Transport
    name: str = "recording"
    results: list[CommandResult] = field(default_factory=list)

    async def run(self, argv: Sequence[str], **kwargs) -> CommandResult:  # type: ignore[no-untyped-def]
        result = await self.inner.run(argv, **kwargs)
        self.results.append(result)
        return result

    async def close(self) -> None:
        await self.inner.close()

    def everything_received(self) -> str:
        return "\n".join(r.out + r.err for r in self.results)


@dataclass(frozen=True)
class World:
    env: Mapping[str, str]
    image: str
    web: str = "bwshop-web-1"
    stopped: str = "bw-stopped"
    database: str = "bw-pg"
    shop_volume: str = "bwshop_data"
    other_volume: str = "bw.other-vol_1"  # dots, dashes, underscores: what docker allows in names


@pytest.fixture(scope="module")
def world(docker_daemon, tmp_path_factory) -> Iterator[World]:
    """Two volumes of known content, a running compose-like container, a stopped one, a 'PostgreSQL' one."""
    w = World(env=dict(docker_daemon.env), image=docker_daemon.image)
    cli = docker_daemon.cli
    bind_dir = tmp_path_factory.mktemp("bind")
    cli("volume", "create", "--label", "com.docker.compose.project=bwshop", w.shop_volume)
    cli("volume", "create", w.other_volume)
    for name, files in ((w.shop_volume, {"a.bin": 1_000_000, "sub/b.bin": 500_000}), (w.other_volume, {"c": 3000})):
        mountpoint = Path(json.loads(cli("volume", "inspect", name).stdout)[0]["Mountpoint"])
        for rel, size in files.items():
            (mountpoint / rel).parent.mkdir(parents=True, exist_ok=True)
            (mountpoint / rel).write_bytes(b"x" * size)
    cli("tag", w.image, "postgres:16")
    labels = {
        "com.docker.compose.project": "bwshop",
        "com.docker.compose.service": "web",
        "com.docker.compose.project.working_dir": "/srv/bw shop",
        "com.docker.compose.project.config_files": "/srv/bw shop/compose.yml,/srv/bw shop/override.yml",
        "note": "commas, and = signs",
    }
    label_args = [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]
    cli("run", "-d", "--name", w.web, "--network", "none", *label_args, "-v", f"{w.shop_volume}:/data",
        "-v", f"{bind_dir}:/host:ro", w.image, "sleep", "600")  # fmt: skip
    cli("run", "--name", w.stopped, "--network", "none", "-v", f"{w.other_volume}:/data", w.image,
        "sh", "-c", "exit 3", check=False)  # fmt: skip
    cli("run", "-d", "--name", w.database, "--network", "none", "-e", f"POSTGRES_PASSWORD={SECRET}",
        "-e", "POSTGRES_USER=app", "postgres:16", "sleep", "600")  # fmt: skip
    try:
        yield w
    finally:
        cli("rm", "-f", "-v", w.web, w.stopped, w.database, check=False)
        cli("volume", "rm", "-f", w.shop_volume, w.other_volume, check=False)
        cli("rmi", "postgres:16", check=False)


@pytest.fixture
async def ssh_transport(make_sshd) -> AsyncIterator:
    """``make(nonroot=False)`` → a RecordingTransport over a fresh sshd host; pools are closed afterwards."""
    pools: list[SSHPool] = []

    def make(nonroot: bool = False) -> RecordingTransport:
        host = make_sshd("docker-nonroot" if nonroot else "docker-probe", nonroot=nonroot)
        pool = SSHPool([asyncssh.read_private_key(host.client_key_path)])
        pools.append(pool)
        target = SSHTarget(host=host.host, port=host.port, username=host.user, host_key=host.host_public_key)
        return RecordingTransport(pool.transport(target))

    yield make
    for pool in pools:
        await pool.close()


async def test_real_docker_over_ssh(world: World, ssh_transport) -> None:
    transport = ssh_transport()
    facts = await docker.probe(ProbeContext(transport=transport, env=world.env))
    assert facts.version.server_version and not facts.via_sudo

    web, stopped, pg = (facts.container(n) for n in (world.web, world.stopped, world.database))
    assert web is not None and stopped is not None and pg is not None
    assert (web.state, web.image, web.compose_project, web.compose_service) == ("running", world.image, "bwshop", "web")
    assert web.labels["note"] == "commas, and = signs" and web.created is not None
    mounts = {m.destination: m for m in web.mounts}
    assert (mounts["/data"].type, mounts["/data"].name, mounts["/data"].rw) == ("volume", world.shop_volume, True)
    assert (mounts["/host"].type, mounts["/host"].rw) == ("bind", False)
    assert (stopped.state, stopped.exit_code, stopped.running) == ("exited", 3, False)

    shop, other = facts.volume(world.shop_volume), facts.volume(world.other_volume)
    assert shop is not None and other is not None
    assert (shop.size_bytes, shop.size_source, shop.used_by) == (1_500_000, "docker system df", (world.web,))
    assert (other.size_bytes, other.used_by) == (3000, (world.stopped,))
    assert shop.labels == {"com.docker.compose.project": "bwshop"} and shop.mountpoint.endswith("/_data")

    (project,) = [p for p in facts.projects if p.name == "bwshop"]
    assert (project.containers, project.services, project.volumes) == ((world.web,), ("web",), (world.shop_volume,))
    assert project.working_dir == "/srv/bw shop"
    assert project.config_files == ("/srv/bw shop/compose.yml", "/srv/bw shop/override.yml")

    (db,) = [d for d in facts.databases if d.container == world.database]
    assert (db.engine, db.engine_name, db.detected_by, db.running) == ("postgresql", "PostgreSQL", "image", True)
    assert set(db.credential_env) == {"POSTGRES_PASSWORD", "POSTGRES_USER"} and db.credentials == "env"
    assert world.web not in {d.container for d in facts.databases}

    # The value was given to the container, but it appears nowhere: not in the result, not even in what the
    # server sent back to the bot.
    for text in (repr(facts), facts.model_dump_json(), str(facts.model_dump()), transport.everything_received()):
        assert SECRET not in text
    assert "POSTGRES_PASSWORD" in transport.everything_received()  # the name did come back (sanity check)


async def test_du_measures_exact_bytes(world: World, ssh_transport) -> None:
    facts = await docker.probe(ProbeContext(transport=ssh_transport(), env=world.env), sizes="du")
    shop, other = facts.volume(world.shop_volume), facts.volume(world.other_volume)
    assert shop is not None and other is not None
    assert (shop.size_source, shop.size_exact, other.size_source) == ("du", True, "du")
    # du -b counts the files plus the directories' own sizes (a few KiB per directory).
    assert 1_500_000 < shop.size_bytes < 1_500_000 + 64 * 1024  # type: ignore[operator]
    assert 3000 < other.size_bytes < 3000 + 64 * 1024  # type: ignore[operator]
    unsized = await docker.probe(ProbeContext(transport=ssh_transport(), env=world.env), sizes="none")
    assert all(v.size_bytes is None for v in unsized.volumes) and unsized.notes == ()


async def test_du_without_privileges_says_why_sizes_are_missing(world: World, ssh_transport) -> None:
    # A login in the docker group but without root or sudo: docker answers, du is not attempted.
    ctx = ProbeContext(transport=ssh_transport(), env=world.env, privileged=False)
    facts = await docker.probe(ctx, sizes="du")
    shop = facts.volume(world.shop_volume)
    assert shop is not None and shop.size_bytes is None and "root or passwordless sudo" in shop.size_note
    assert any("volume(s) is unknown" in note for note in facts.notes)


async def test_no_docker_cli_is_absent_with_a_hint(ssh_transport) -> None:
    ctx = ProbeContext(transport=ssh_transport(), env={"PATH": "/nonexistent-bin"})
    with pytest.raises(Absent) as caught:
        await docker.probe(ctx)
    assert isinstance(caught.value, docker.DockerAbsent) and str(caught.value) == "docker"
    assert "apt install docker.io" in caught.value.hint  # type: ignore[attr-defined]


async def test_missing_socket_says_daemon_not_reachable(ssh_transport, tmp_path: Path) -> None:
    socket = tmp_path / "no-such-docker.sock"
    ctx = ProbeContext(transport=ssh_transport(), env={"DOCKER_HOST": f"unix://{socket}"})
    with pytest.raises(docker.DockerUnavailable) as caught:
        await docker.probe(ctx)
    assert caught.value.reason == "daemon-down"
    assert "not reachable" in str(caught.value) and os.fspath(socket) in str(caught.value)
    assert "systemctl start docker" in str(caught.value)


async def test_non_root_outside_docker_group_is_told_how_to_get_access(docker_daemon, ssh_transport) -> None:
    ctx = ProbeContext(
        transport=ssh_transport(nonroot=True), sudo=False, privileged=False, env={"DOCKER_HOST": docker_daemon.host_url}
    )
    with pytest.raises(docker.DockerUnavailable) as caught:
        await docker.probe(ctx)
    assert caught.value.reason == "permission-denied"
    assert "permission denied" in str(caught.value) and "`docker` group" in str(caught.value)


async def test_objects_removed_between_listing_and_inspecting_are_skipped(world: World, ssh_transport) -> None:
    runner = docker._Docker(ProbeContext(transport=ssh_transport(), env=world.env))
    ids = [world.web, "0" * 64]  # the second one does not exist (any more)
    outputs = await runner.inspect(docker.ARGV_INSPECT_CONTAINERS, ids, what="docker container inspect")
    assert [c.name for out in outputs for c in parse_containers(out)] == [world.web]
    names = [world.other_volume, "bw-gone-volume"]
    outputs = await runner.inspect(docker.ARGV_INSPECT_VOLUMES, names, what="docker volume inspect")
    assert [v.name for out in outputs for v in parse_volumes(out)] == [world.other_volume]
