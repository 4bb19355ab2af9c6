"""Every source's plan from recorded probe facts (tests/data/probes/*, see their .source notes): what runs,
that a recognisable password is in no argv, repr, description or error, and that no command handed to
borg holds an argument borg would mangle (a literal ``--``, which borg 1.4 on Python 3.11 drops, or an empty
string, which it refuses)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bot.backup import sources
from bot.backup.jobs import ArchiveJob
from bot.backup.sources import PlanError
from bot.backup.sources.base import job_suffix
from bot.backup.sources.docker import IN_CONTAINER, DockerConfig, DockerDatabase, DockerSourceFacts
from bot.backup.sources.mongodb import MongoDBConfig, MongoDBFacts
from bot.backup.sources.mysql import MySQLConfig, MySQLFacts
from bot.backup.sources.postgresql import AS_USER, PostgreSQLConfig, PostgreSQLFacts
from bot.probes import mongodb as mongo_probe
from bot.probes import mysql as my_probe
from bot.probes import postgresql as pg_probe
from bot.probes.dbcheck import DbCredential
from bot.probes.docker_db import detect_databases
from bot.probes.docker_models import Container, DockerFacts, DockerVersion, Mount, Volume

RECORDED = Path(__file__).parent / "data" / "probes"
PASSWORD = "PW-M4rk3r-7f3a 'single' \"double\" \\back $(cmd) #hash"
VARIANTS = (PASSWORD, "PW-M4rk3r-7f3a", my_probe.quote_option(PASSWORD), json.dumps(PASSWORD))


def mysql_facts(credential: DbCredential) -> MySQLFacts:
    server = my_probe.parse_info((RECORDED / "mysql_info_mariadb1011.txt").read_text())
    info = my_probe.MySQLInfo(client="mariadb", client_version="mariadb Ver 15.1 Distrib 10.11.19-MariaDB",
                              running=True, server=server)  # fmt: skip
    return MySQLFacts(info=info, credential=credential)


def pg_facts(credential: DbCredential) -> PostgreSQLFacts:
    server = pg_probe.parse_server((RECORDED / "pg_info_psql15.txt").read_text())
    return PostgreSQLFacts(info=pg_probe.PgInfo(client_version="psql 15", running=True, port=5433, server=server),
                           credential=credential)  # fmt: skip


def mongo_facts(credential: DbCredential) -> MongoDBFacts:
    recorded = mongo_probe.parse_output((RECORDED / "mongo_replset.txt").read_text())
    info = mongo_probe.info_from(recorded, "mongosh", mongo_probe.credential_from(credential))
    return MongoDBFacts(info=info, credential=credential)


def docker_facts() -> DockerSourceFacts:
    db = Container(id="1" * 64, name="db", image="postgres:16-alpine", state="running",
                   env_names=("POSTGRES_PASSWORD_FILE", "POSTGRES_USER"),
                   mounts=(Mount(type="volume", name="pgdata", source="/var/lib/docker/volumes/pgdata/_data",
                                 destination="/var/lib/postgresql/data"),))  # fmt: skip
    web = Container(id="2" * 64, name="web", image="nginx", state="running",
                    mounts=(Mount(type="volume", name="pgdata", source="/v", destination="/srv"),))  # fmt: skip
    maria = Container(id="3" * 64, name="maria", image="mariadb:11", state="exited",
                      env_names=("MARIADB_ROOT_PASSWORD",))  # fmt: skip
    volume = Volume(name="pgdata", mountpoint="/var/lib/docker/volumes/pgdata/_data", used_by=("db", "web"))
    facts = DockerFacts(version=DockerVersion(client_version="27", client_api="1.47"), containers=(db, web, maria),
                        volumes=(volume,), databases=detect_databases([db, web, maria]))  # fmt: skip
    return DockerSourceFacts(docker=facts)


def every_plan() -> list[tuple[str, list[ArchiveJob]]]:
    """A plan of every type that takes a password, with the recognisable one."""
    my = DbCredential(engine="mysql", host="db.internal", port=3307, user="backup", password=PASSWORD)
    pg = DbCredential(engine="postgresql", host="10.0.0.5", user="backup", password=PASSWORD)
    mongo = DbCredential(engine="mongodb", host="10.0.0.6", user="backup", password=PASSWORD)
    docker = DockerConfig(volumes=("pgdata",), policies={"db": "stop", "web": "pause"},
                          databases=(DockerDatabase(container="db", databases=("app",)),
                                     DockerDatabase(container="maria")))  # fmt: skip
    return [
        ("mysql", sources.get("mysql").plan(MySQLConfig(), mysql_facts(my))),
        ("postgresql", sources.get("postgresql").plan(PostgreSQLConfig(), pg_facts(pg))),
        ("mongodb", sources.get("mongodb").plan(MongoDBConfig(), mongo_facts(mongo))),
        ("docker", sources.get("docker").plan(docker, docker_facts())),
    ]


def test_a_password_is_in_no_argv_repr_or_description() -> None:
    for kind, jobs in every_plan():
        assert jobs, kind
        for job in jobs:
            visible = " ".join([*job.command, *(" ".join(a) for a in (*job.before, *job.after)), repr(job),
                                job.description, job.suffix, job.stdin_name])  # fmt: skip
            for variant in VARIANTS:
                assert variant not in visible, (kind, job.suffix)
    facts = mysql_facts(DbCredential(engine="mysql", user="u", password=PASSWORD))
    assert "PW-M4rk3r" not in repr(facts) and "PW-M4rk3r" not in str(facts.model_dump())


def test_commands_for_borg_hold_no_double_dash_and_no_empty_argument() -> None:
    for kind, jobs in every_plan():
        suffixes = [job.suffix for job in jobs]
        assert len(set(suffixes)) == len(suffixes), kind
        for job in jobs:
            if job.kind == "command":
                assert "--" not in job.command and "" not in job.command, (kind, job.command)


def test_mysql_plan_from_recorded_facts() -> None:
    socket_root = DbCredential(engine="mysql", auth_method="socket")
    jobs = sources.get("mysql").plan(MySQLConfig(exclude=("test",)), mysql_facts(socket_root))
    by_db = {job.stdin_name: job for job in jobs}
    assert sorted(by_db) == ["shop%20%22main%22%3B%20x.sql", "wiki.sql"]
    shop = by_db["shop%20%22main%22%3B%20x.sql"]
    assert shop.command[4] == '+shop "main"; x' and shop.privileged and not shop.secret_env
    assert "--lock-tables" in shop.command and "--user=root" in shop.command  # MEMORY and MyISAM tables
    assert shop.suffix.startswith("mysql-shop__main___x-") and len(shop.suffix) <= 80
    password = sources.get("mysql").plan(
        MySQLConfig(databases=("wiki",)), mysql_facts(DbCredential(engine="mysql", user="b", password='p"w\\'))
    )[0]
    assert password.secret_env == {"BACKUP_BOT_MYSQL_PASSWORD": '"p\\"w\\\\"'} and not password.privileged


def test_postgresql_plan_from_recorded_facts() -> None:
    peer = DbCredential(engine="postgresql", auth_method="socket")
    jobs = sources.get("postgresql").plan(PostgreSQLConfig(exclude=("root",)), pg_facts(peer))
    assert [j.suffix for j in jobs] == ["pg-postgres", "pg-test", "globals"]
    assert jobs[0].command == ("sh", "-c", AS_USER, "sh", "postgres", "pg_dump", "--format=custom", "--compress=0",
                               "--no-password", "--port=5433",
                               "--dbname=dbname='postgres' connect_timeout=30")  # fmt: skip
    assert jobs[-1].command[5:] == ("pg_dumpall", "--globals-only", "--no-password", "--port=5433")
    given = DbCredential(engine="postgresql", host="10.0.0.5", user="backup", password="x")
    facts = pg_facts(given)
    limited = facts.info.model_copy(update={"server": facts.info.server.model_copy(update={"superuser": False})})
    *_, globals_job = sources.get("postgresql").plan(PostgreSQLConfig(), facts.model_copy(update={"info": limited}))
    assert "--no-role-passwords" in globals_job.command and globals_job.secret_env == {"PGPASSWORD": "x"}
    assert not globals_job.privileged


def test_docker_plan_from_facts() -> None:
    config = DockerConfig(volumes=("pgdata",), policies={"db": "stop", "web": "pause", "maria": "stop"},
                          databases=(DockerDatabase(container="db", databases=("app",)),
                                     DockerDatabase(container="maria")))  # fmt: skip
    volume, db, maria = sources.get("docker").plan(config, docker_facts())
    assert volume.before == (("docker", "stop", "--time=60", "--", "db"), ("docker", "pause", "--", "web"))
    assert [a[4:6] for a in volume.after] == [("pause", "web"), ("stop", "db")]  # reverse order
    assert db.command[:3] == ("docker", "exec", "db") and db.privileged
    assert db.command[7:12] == ("postgresql", "+POSTGRES_USER", "+POSTGRES_PASSWORD_FILE", "+postgres", "+")
    assert db.command[12] == "pg_dump" and db.stdin_name == "app.pgdump"
    assert maria.command[7:12] == ("mysql", "+", "+MARIADB_ROOT_PASSWORD", "+root", "+")
    assert maria.command[-1] == "--all-databases" and maria.stdin_name == "all.sql"


def test_plan_errors_never_carry_the_password() -> None:
    broken = DbCredential(engine="mysql", user="u", password="line\nbreak " + PASSWORD)
    with pytest.raises(PlanError) as caught:
        sources.get("mysql").plan(MySQLConfig(databases=("x",)), mysql_facts(broken))
    assert "PW-M4rk3r" not in str(caught.value) and "line break" in str(caught.value)
    unknown = pg_facts(DbCredential(engine="postgresql", auth_method="socket"))
    nothing = unknown.model_copy(update={"info": unknown.info.model_copy(update={"server": None})})
    with pytest.raises(PlanError, match="probe the server again"):
        sources.get("postgresql").plan(PostgreSQLConfig(), nothing)


def test_suffixes_are_stable_clean_and_distinct() -> None:
    assert job_suffix("pg", "shop") == "pg-shop"
    assert job_suffix("pg", "Shop") != job_suffix("pg", "shop") and job_suffix("pg", "Shop").startswith("pg-shop-")
    long = job_suffix("pg", "x" * 300)
    assert len(long) <= 80 and long == job_suffix("pg", "x" * 300) and long != job_suffix("pg", "x" * 299)
    ArchiveJob(suffix=long, kind="command", command=("true",))  # accepted by the contract


def in_container(engine: str, user_var: str, password_var: str, default_user: str, env: dict[str, str]) -> str:
    """Run the docker source's IN_CONTAINER script locally with a fake client that prints what it received
    (arguments, stdin, PGUSER/PGPASSWORD) — the shell logic, without a container."""
    fake = ("sh", "-c", 'printf "arg:%s\\n" "$@"; echo "env:${PGUSER-}:${PGPASSWORD-}"; cat', "fake", "--archive")
    argv = ["sh", "-c", IN_CONTAINER, "sh", engine, f"+{user_var}", f"+{password_var}", f"+{default_user}", "+",
            *fake]  # fmt: skip
    done = subprocess.run(argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=True)
    return done.stdout


def test_in_container_script_reads_variables_and_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text('file "pw" \\ x')
    env = {"MONGO_INITDB_ROOT_USERNAME": "admin", "MONGO_INITDB_ROOT_PASSWORD_FILE": str(secret)}
    mongo = in_container("mongodb", "MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD_FILE", "", env)
    assert mongo.splitlines() == ["arg:--archive", "arg:--username=admin", "arg:--authenticationDatabase=admin",
                                  "arg:--config=/dev/stdin", "env::", 'password: "file \\"pw\\" \\\\ x"']  # fmt: skip
    pg = in_container("postgresql", "POSTGRES_USER", "POSTGRES_PASSWORD", "postgres", {"POSTGRES_PASSWORD": "s p"})
    assert pg.splitlines() == ["arg:--archive", "env:postgres:s p"]
    with pytest.raises(subprocess.CalledProcessError):
        in_container("postgresql", "BAD;NAME", "", "postgres", {})


def test_mysql_container_without_root_password_uses_the_application_login() -> None:
    names = ("MYSQL_RANDOM_ROOT_PASSWORD", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE")
    app = Container(id="4" * 64, name="app-db", image="mysql:8", state="running", env_names=names)
    facts = DockerSourceFacts(docker=DockerFacts(version=DockerVersion(client_version="", client_api=""),
                                                 containers=(app,), databases=detect_databases([app])))  # fmt: skip
    [job] = sources.get("docker").plan(DockerConfig(databases=(DockerDatabase(container="app-db", databases=("a",)),)),
                                       facts)  # fmt: skip
    assert job.command[7:12] == ("mysql", "+MYSQL_USER", "+MYSQL_PASSWORD", "+root", "+a")
