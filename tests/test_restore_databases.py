"""Database restores into a new name on the machine's PostgreSQL and MariaDB, over a real sshd host: rows per table
counted in the restored database equal the source's; while a restore is incomplete its target carries a marker (a
comment on the PostgreSQL database, a marker table in MariaDB), which the same restore's retry recognises (drops
and restores again) while any other existing database is refused."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from bot.backup import restore_db
from bot.backup.sources.mysql import MySQLConfig, MySQLFacts, MySQLSource
from bot.backup.sources.postgresql import PostgreSQLConfig, PostgreSQLFacts, PostgreSQLSource
from bot.probes import mysql as my_probe
from bot.probes import postgresql as pg_probe
from bot.probes.dbcheck import DbCredential
from tests.harness.databases import _mariadb, _psql
from tests.test_sources_support import run_job, source_host

__all__ = ["source_host"]
PEER = DbCredential(engine="postgresql", auth_method="socket")
SOCKET_ROOT = DbCredential(engine="mysql", auth_method="socket")


@pytest.fixture
def names() -> Iterator[str]:
    name = f"bwtest_{os.getpid()}_{secrets.token_hex(4)}"
    yield name
    _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    _psql(f'DROP DATABASE IF EXISTS "{name}"')
    _mariadb(f"DROP DATABASE IF EXISTS `{name}`")


async def test_postgresql_restore_into_a_new_name_with_rows_per_table_and_a_marker_while_incomplete(
    source_host, ctx_for, postgres_db, names
) -> None:
    host, transport, repo = source_host
    _psql("CREATE TABLE t_small (id int); INSERT INTO t_small SELECT generate_series(1, 7);"
          'CREATE SCHEMA "odd schema"; CREATE TABLE "odd schema"."We ird" (x text);'
          "INSERT INTO \"odd schema\".\"We ird\" SELECT md5(g::text) FROM generate_series(1, 1234) g;",
          database=postgres_db.name)  # fmt: skip
    info = await pg_probe.probe(ctx_for(host))
    [job, _] = PostgreSQLSource().plan(PostgreSQLConfig(databases=(postgres_db.name,)),
                                       PostgreSQLFacts(info=info, credential=PEER))  # fmt: skip
    assert (await run_job(transport, repo, job, "pg-r1")).error is None
    # A retry after a crash: the target exists, marked by this restore's token — dropped and restored again.
    _psql(f'CREATE DATABASE "{names}"')
    _psql(f"COMMENT ON DATABASE \"{names}\" IS '{restore_db.PG_MARK}rTOKEN'")
    result = await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("pg-r1"), names, PEER,
                                                 token="rTOKEN")  # fmt: skip
    assert result.tables == {"public.t_small": 7, '"odd schema"."We ird"': 1234}
    ctx = ctx_for(host)
    login = pg_probe.credential_from(PEER)
    assert result.tables == await restore_db.pg_counts(ctx, login, postgres_db.name)  # compared with the source
    comment = _psql(f"SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                    f"WHERE datname = '{names}'").stdout.strip()  # fmt: skip
    assert comment == ""  # complete: the marker is gone
    # Another restore (another token) into the now existing database is refused before anything is written.
    with pytest.raises(restore_db.RestoreRefused, match="already exists"):
        await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("pg-r1"), names, PEER, token="rOTHER")
    assert await restore_db.database_exists(transport, "postgresql", PEER, names)


async def test_mariadb_restore_into_a_new_name_with_rows_per_table(source_host, ctx_for, mariadb_db, names) -> None:
    host, transport, repo = source_host
    db = f"`{mariadb_db.name}`"
    _mariadb(f"CREATE TABLE {db}.`a` (id INT); INSERT INTO {db}.`a` VALUES (1),(2),(3);"
             f"CREATE TABLE {db}.`we ird` (x TEXT); INSERT INTO {db}.`we ird` VALUES ('x');")
    info = await my_probe.probe(ctx_for(host))
    [job] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,)), MySQLFacts(info=info, credential=SOCKET_ROOT))
    assert (await run_job(transport, repo, job, "my-r1")).error is None
    result = await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("my-r1"), names, SOCKET_ROOT,
                                            token="rTOKEN")  # fmt: skip
    source = await restore_db.my_counts(ctx_for(host), "mariadb", my_probe.credential_from(SOCKET_ROOT),
                                        mariadb_db.name)  # fmt: skip
    assert result.tables == source == {"a": 3, "we ird": 1}
    assert restore_db.MY_MARK_TABLE not in _mariadb(f"SHOW TABLES FROM `{names}`").stdout
    with pytest.raises(restore_db.RestoreRefused, match="already exists"):
        await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("my-r1"), names, SOCKET_ROOT, token="rX")
