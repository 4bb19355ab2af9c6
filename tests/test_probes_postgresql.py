"""The PostgreSQL probe: parsers on recorded output; clusters, access and databases against real servers through
real sshd hosts.

Two real servers are used. The machine's own cluster (Debian's packaging, so ``pg_lsclusters`` is real) has
``trust`` for both the socket and 127.0.0.1 in its pg_hba.conf: against it a test proves the probe finds the
cluster, reaches it through ``runuser -u postgres`` on the socket and reads the facts — but not that peer or
password authentication works, since trust accepts anyone. For that, :func:`scram_cluster` starts a throwaway
cluster of the same PostgreSQL (``initdb --auth-local=peer --auth-host=scram-sha-256``, its own temp dir,
socket directory and free port; stopped and removed in teardown) whose pg_hba.conf really checks: peer on the
socket, SCRAM passwords on 127.0.0.1. The machine's pg_hba.conf is never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.probes import postgresql as pg
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.postgresql import PgCredential
from bot.transport import LocalTransport
from tests.harness.common import free_port, make_workdir, require_root, unique_token

RECORDED = Path(__file__).parent / "data" / "probes"
ODD_NAME_PREFIX = "bw \"q\" 'x'; host=evil\t"


def error_blocks(name: str) -> list[tuple[str, str]]:
    chunks = (RECORDED / name).read_text().split("=== ")[1:]
    return [(kind.strip(), body.rstrip("\n")) for kind, _, body in (c.partition("\n") for c in chunks)]


@dataclass
class ScramCluster:
    port: int
    socket_dir: str
    data_dir: str

    def sql(self, statement: str, database: str = "postgres") -> str:
        """As the postgres system user over the socket (peer); ``database`` may be any name."""
        argv = [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.socket_dir,
            "-p",
            str(self.port),
            "-d",
            pg.conninfo_dbname(database),
            "-c",
            statement,
        ]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60, cwd="/").stdout

    def role(self, password: str) -> str:
        name = f"bwtest_{unique_token()}"
        self.sql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")
        return name

    def database(self, name: str) -> str:
        self.sql('CREATE DATABASE "' + name.replace('"', '""') + '"')
        return name


@contextlib.contextmanager
def scram_cluster() -> Iterator[ScramCluster]:
    """A throwaway cluster with peer (socket) and scram-sha-256 (127.0.0.1) authentication; see the docstring."""
    require_root("starting a throwaway PostgreSQL cluster as the postgres user")
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries or shutil.which("psql") is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql (Debian package postgresql)")
    bindir = binaries[-1].parent
    workdir = make_workdir("pgscram")
    shutil.chown(workdir, "postgres", "postgres")
    workdir.chmod(0o755)  # the socket directory: other users connect through it (initdb makes data/ 0700)
    data, port = workdir / "data", free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    options = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={workdir} -c fsync=off"
    try:
        subprocess.run(
            [
                *as_postgres,
                bindir / "initdb",
                "-D",
                data,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            capture_output=True,
            check=True,
            timeout=120,
            cwd="/",
        )
        subprocess.run(
            [*as_postgres, bindir / "pg_ctl", "-D", data, "-l", workdir / "log", "-o", options, "-w", "start"],
            capture_output=True,
            check=True,
            timeout=120,
            cwd="/",
        )
        yield ScramCluster(port=port, socket_dir=str(workdir), data_dir=str(data))
    finally:
        subprocess.run(
            [*as_postgres, bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=120,
            cwd="/",
        )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def scram() -> Iterator[ScramCluster]:
    with scram_cluster() as cluster:
        yield cluster


def write_home_file(host, name: str, text: str, mode: int = 0o600) -> Path:
    path = Path(host.home) / name
    path.write_text(text)
    entry = pwd.getpwnam(host.user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


def machine_lsclusters() -> str:
    return subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout


def main_cluster_sql(statement: str) -> str:
    argv = ["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", statement]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


# --- parsers on recorded output ------------------------------------------------------------------------------


def test_lsclusters_parser_on_recorded_outputs() -> None:
    (main,) = pg.parse_lsclusters((RECORDED / "pg_lsclusters_debian12.txt").read_text())
    assert main == pg.PgCluster(
        version="15",
        name="main",
        port=5432,
        status="online",
        online=True,
        owner="postgres",
        data_directory="/var/lib/postgresql/15/main",
        log="/var/log/postgresql/postgresql-15-main.log",
    )
    old = pg.parse_lsclusters((RECORDED / "pg_lsclusters_two_clusters_old.txt").read_text())
    assert [(c.version, c.port, c.online, c.owner) for c in old] == [
        ("7.4", 5432, False, "root"),
        ("8.1", 5433, True, "postgres"),
    ]


def test_lsclusters_takes_exact_paths_from_json() -> None:
    recorded = (RECORDED / "pg_lsclusters_debian12.txt").read_text()
    spaced = recorded.replace("/var/lib/postgresql/15/main", "/srv/pg data/main")
    (cluster,) = pg.parse_lsclusters(spaced)
    assert cluster.data_directory == "/srv/pg data/main"  # the text column alone would say "/srv/pg"


@pytest.mark.parametrize("garbage", ["", "@text\nnot a cluster line at all\n", "Usage: pg_lsclusters [-hjs]\n"])
def test_lsclusters_parser_refuses_garbage(garbage: str) -> None:
    with pytest.raises(ProbeError, match="pg_lsclusters"):
        pg.parse_lsclusters(garbage)


def test_server_parser_on_recorded_output_and_garbage() -> None:
    server = pg.parse_server((RECORDED / "pg_info_psql15.txt").read_text())
    assert (server.version_num, server.major, server.version) == (150020, 15, "15.20")
    assert (server.data_directory, server.current_user, server.superuser) == (
        "/var/lib/postgresql/15/main",
        "postgres",
        True,
    )
    assert server.databases == ("postgres", "root", "test")
    for garbage in ("", "hello\n", "version_num\tfifteen\x00user\tx\x00"):
        with pytest.raises(ProbeError, match="psql printed something unexpected"):
            pg.parse_server(garbage)


def test_pgpass_parser_keeps_no_password() -> None:
    text = "# comment\nlocalhost:5432:*:app:s3cret-one\n127.0.0.1:*:my\\:db:back\\\\up:s3cret:two\n\nbroken-line\n"
    entries = pg.parse_pgpass(text)
    assert [(e.host, e.port, e.database, e.user) for e in entries] == [
        ("localhost", "5432", "*", "app"),
        ("127.0.0.1", "*", "my:db", "back\\up"),
    ]
    assert "s3cret" not in repr(entries)
    logins = pg.pgpass_logins(entries, 5432, None)
    assert [(c.method, c.user, c.host, c.port, c.password) for c in logins] == [
        ("pgpass", "app", "localhost", 5432, None),
        ("pgpass", "back\\up", "127.0.0.1", 5432, None),
    ]
    assert pg.pgpass_logins(entries, 5433, None)[0].user == "back\\up"  # only the wildcard port matches


def test_psql_errors_are_classified() -> None:
    for kind, stderr in error_blocks("pg_errors_psql15.txt"):
        assert pg.classify_error(stderr) == kind, stderr
    assert pg.classify_error("psql: error: something new") == "other"


def test_database_name_goes_into_a_quoted_conninfo() -> None:
    assert pg.conninfo_dbname("a'b\\c=d e") == "dbname='a\\'b\\\\c=d e'"
    argv = pg.psql_argv(PgCredential(method="peer", os_user="postgres", port=5433, database="x=y"), "SELECT 1")
    assert argv[:4] == ["runuser", "-u", "postgres", "--"] and argv[argv.index("-d") + 1] == "dbname='x=y'"


# --- real servers through sshd -------------------------------------------------------------------------------


async def test_machine_cluster_through_runuser(make_sshd, ctx_for, postgres_db) -> None:
    """The machine's cluster trusts the socket: this proves discovery and the runuser path, not peer auth."""
    info = await pg.probe(ctx_for(make_sshd("pg-root")))
    expected = [tuple(line.split()[:3]) for line in machine_lsclusters().splitlines()]
    assert [(c.version, c.name, str(c.port)) for c in info.clusters] == expected
    assert info.running and info.access is not None and info.access.method == "peer"
    assert info.server is not None and info.server.current_user == "postgres" and info.server.superuser
    assert info.server.major == int(main_cluster_sql("SHOW server_version_num")) // 10000
    assert info.data_directory == main_cluster_sql("SHOW data_directory")
    assert postgres_db.name in info.server.databases and "template0" not in info.server.databases
    assert info.client_version.startswith("psql (PostgreSQL)")


async def test_peer_authentication_for_real(make_sshd, ctx_for, scram) -> None:
    info = await pg.probe(ctx_for(make_sshd("pg-peer")), port=scram.port, socket_dir=scram.socket_dir)
    assert info.access is not None and info.access.method == "peer" and info.access.os_user == "postgres"
    assert info.server is not None and info.server.current_user == "postgres"
    assert info.data_directory == scram.data_dir  # from SQL: pg_lsclusters does not know this cluster
    # The same socket refuses a login whose system user is not "postgres": peer is really checked.
    user = make_sshd("pg-peer-user", nonroot=True)
    as_postgres = PgCredential(method="given", user="postgres", host=scram.socket_dir, port=scram.port)
    refused = await pg.probe(ctx_for(user), as_postgres, port=scram.port)
    assert refused.access is None and refused.attempts[-1].failure == "auth_failed"
    assert "Peer authentication failed" in refused.attempts[-1].note


async def test_pgpass_of_the_login_user_is_used(make_sshd, ctx_for, scram) -> None:
    password = "pg:pass\\word " + unique_token()
    role = scram.role(password)
    odd = scram.database(ODD_NAME_PREFIX + unique_token())
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    host = make_sshd("pg-pgpass", nonroot=True)
    write_home_file(host, ".pgpass", f"# backups\n127.0.0.1:{scram.port}:*:{role}:{escaped}\n")
    info = await pg.probe(ctx_for(host), port=scram.port)
    assert [(a.method, a.found, a.ok) for a in info.attempts] == [("peer", False, False), ("pgpass", True, True)]
    assert info.access is not None and (info.access.method, info.access.user, info.access.password) == (
        "pgpass",
        role,
        None,
    )
    assert info.server is not None and info.server.current_user == role and not info.server.superuser
    assert odd in info.server.databases  # quotes, space, ';' and a tab in the name, parsed exactly
    assert info.server.data_directory is None  # hidden from a non-superuser; pg_lsclusters doesn't know it either


async def test_pgpass_with_a_wrong_or_exposed_password_fails_precisely(make_sshd, ctx_for, scram) -> None:
    role = scram.role("right-" + unique_token())
    host = make_sshd("pg-pgpass-bad", nonroot=True)
    write_home_file(host, ".pgpass", f"127.0.0.1:{scram.port}:*:{role}:wrong\n")
    wrong = await pg.probe(ctx_for(host), port=scram.port)
    assert wrong.access is None and wrong.running
    assert wrong.attempts[1].failure == "auth_failed" and "password authentication failed" in wrong.attempts[1].note
    write_home_file(host, ".pgpass", f"127.0.0.1:{scram.port}:*:{role}:wrong\n", mode=0o644)
    exposed = await pg.probe(ctx_for(host), port=scram.port)
    assert "chmod 600 ~/.pgpass" in exposed.attempts[1].note


async def test_given_password_login_and_wrong_password(make_sshd, ctx_for, scram) -> None:
    password = "given " + unique_token()
    role = scram.role(password)
    host = make_sshd("pg-given", nonroot=True)
    given = PgCredential(method="given", user=role, host="127.0.0.1", port=scram.port, password=SecretStr(password))
    info = await pg.probe(ctx_for(host), given, port=scram.port)
    assert [a.method for a in info.attempts] == ["peer", "pgpass", "given"]
    assert info.attempts[1].note == "~/.pgpass does not exist."
    assert info.access is not None and info.access.method == "given" and info.server is not None
    secret = "BW-SECRET-" + unique_token()
    bad = await pg.probe(ctx_for(host), given.model_copy(update={"password": SecretStr(secret)}), port=scram.port)
    assert bad.access is None and bad.attempts[-1].failure == "auth_failed"
    for shown in (repr(bad), bad.model_dump_json(), *(a.note for a in bad.attempts)):
        assert secret not in shown


async def test_nothing_listening_is_not_running(make_sshd, ctx_for) -> None:
    port = free_port()
    info = await pg.probe(ctx_for(make_sshd("pg-down", nonroot=True)), port=port)
    assert not info.running and info.server is None
    assert f"No PostgreSQL server answers on port {port}" in info.note


async def test_broken_pg_lsclusters_does_not_hide_the_databases(make_sshd, ctx_for, postgres_db) -> None:
    """A stand-in ``pg_lsclusters`` first on the sshd host's PATH prints garbage; the real server still answers."""
    host = make_sshd("pg-lsclusters-garbage")
    fake = Path(host.workdir) / "bin" / "pg_lsclusters"
    fake.write_text("#!/bin/sh\necho 'Error: Invalid data directory for cluster 15 main'\n")
    fake.chmod(0o755)
    info = await pg.probe(ctx_for(host))
    assert info.clusters == () and "pg_lsclusters printed" in info.note
    assert info.server is not None and postgres_db.name in info.server.databases


async def test_missing_psql_is_absent(tmp_path: Path) -> None:
    (tmp_path / "sh").symlink_to("/bin/sh")
    with pytest.raises(Absent):
        await pg.probe(ProbeContext(LocalTransport(), env={"PATH": str(tmp_path)}))
