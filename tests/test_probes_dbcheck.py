"""The connectivity test against the machine's real MariaDB and PostgreSQL, run from a real sshd host.

Every failure kind is produced for real: a wrong password (MariaDB checks it; for PostgreSQL the throwaway
SCRAM cluster of tests/test_probes_postgresql.py does, since the machine's cluster trusts 127.0.0.1), a closed
port, a name that cannot resolve, a listener that accepts and never answers (an asyncio server in this test
process, on 127.0.0.1, reached from the sshd session on the same machine), a database the user may not use,
a database that does not exist, a missing client (mongosh is not installed here) and a server the bot cannot
reach over SSH.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import asyncssh
import pytest
from pydantic import SecretStr

from bot.probes.base import ProbeContext
from bot.probes.dbcheck import CheckResult, DbCredential, check
from bot.transport import SSHPool, SSHTarget
from tests.harness.common import free_port, unique_token
from tests.test_probes_mysql import ODD_NAME_PREFIX, mariadb_admin, quoted
from tests.test_probes_postgresql import ODD_NAME_PREFIX as PG_ODD_NAME_PREFIX
from tests.test_probes_postgresql import ScramCluster, scram_cluster

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def scram() -> Iterator[ScramCluster]:
    with scram_cluster() as cluster:
        yield cluster


@pytest.fixture
async def ctx(make_sshd) -> AsyncIterator[ProbeContext]:
    host = make_sshd("dbcheck")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)])
    yield ProbeContext(pool.transport(SSHTarget(host.host, host.port, host.user, host.host_public_key)))
    await pool.close()


@pytest.fixture
async def blackhole() -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
def mysql_login(mariadb_db, mariadb_user) -> DbCredential:
    login = mariadb_user(mariadb_db)
    return DbCredential(
        engine="mysql",
        host="127.0.0.1",
        port=3306,
        user=login.user,
        password=SecretStr(login.password),
        database=mariadb_db.name,
    )


@pytest.fixture
def pg_login(scram) -> DbCredential:
    password = "pw " + unique_token()
    role = scram.role(password)
    return DbCredential(engine="postgresql", host="127.0.0.1", port=scram.port, user=role, password=SecretStr(password))


def failed(result: CheckResult, kind: str) -> None:
    assert (result.ok, result.failure, result.databases) == (False, kind, ()), result
    assert result.message and result.fix, result


# --- MariaDB -------------------------------------------------------------------------------------------------


async def test_mysql_success_lists_the_users_databases(ctx, mysql_login, mariadb_db) -> None:
    result = await check(ctx, mysql_login, timeout=TIMEOUT)
    assert result.ok and result.databases == (mariadb_db.name,) and result.failure is None


async def test_mysql_failures(ctx, mysql_login, blackhole) -> None:
    wrong = mysql_login.model_copy(update={"password": SecretStr("wrong")})
    failed(await check(ctx, wrong, timeout=TIMEOUT), "auth_failed")
    failed(await check(ctx, mysql_login.model_copy(update={"port": free_port()}), timeout=TIMEOUT), "refused")
    unknown = mysql_login.model_copy(update={"host": "no-such-host.invalid"})
    failed(await check(ctx, unknown, timeout=TIMEOUT), "unknown_host")
    hung = await check(ctx, mysql_login.model_copy(update={"port": blackhole}), timeout=2)
    failed(hung, "timeout")
    assert f"127.0.0.1:{blackhole}" in hung.message and "firewall" in hung.fix
    failed(await check(ctx, mysql_login.model_copy(update={"database": "test"}), timeout=TIMEOUT), "access_denied")
    # MySQL tells only a user with global privileges that a database does not exist (others get 1044): root.
    missing = DbCredential(engine="mysql", auth_method="socket", database="no_such_db_" + unique_token())
    failed(await check(ctx, missing, timeout=TIMEOUT), "unknown_database")


async def test_mysql_socket_login_into_an_odd_database_name(ctx, mariadb_db) -> None:
    name = ODD_NAME_PREFIX + unique_token()
    mariadb_admin(f"CREATE DATABASE {quoted(name)}")
    try:
        socket_root = DbCredential(engine="mysql", auth_method="socket", database=name)
        result = await check(ctx, socket_root, timeout=TIMEOUT)
        assert result.ok and name in result.databases and "mysql" not in result.databases
    finally:
        mariadb_admin(f"DROP DATABASE {quoted(name)}")


# --- PostgreSQL ----------------------------------------------------------------------------------------------


async def test_postgresql_success(ctx, postgres_db, pg_login) -> None:
    trusted = await check(ctx, DbCredential(engine="postgresql", host="127.0.0.1", user="postgres"), timeout=TIMEOUT)
    assert trusted.ok and postgres_db.name in trusted.databases and "template0" not in trusted.databases
    scram_login = await check(ctx, pg_login, timeout=TIMEOUT)
    assert scram_login.ok and "postgres" in scram_login.databases


async def test_postgresql_failures(ctx, pg_login, scram, blackhole) -> None:
    failed(
        await check(ctx, pg_login.model_copy(update={"password": SecretStr("wrong")}), timeout=TIMEOUT), "auth_failed"
    )
    failed(await check(ctx, pg_login.model_copy(update={"port": free_port()}), timeout=TIMEOUT), "refused")
    unknown = pg_login.model_copy(update={"host": "no-such-host.invalid"})
    failed(await check(ctx, unknown, timeout=TIMEOUT), "unknown_host")
    failed(await check(ctx, pg_login.model_copy(update={"port": blackhole}), timeout=2), "timeout")
    locked = scram.database("locked_" + unique_token())
    scram.sql(f'REVOKE CONNECT ON DATABASE "{locked}" FROM PUBLIC')
    failed(await check(ctx, pg_login.model_copy(update={"database": locked}), timeout=TIMEOUT), "access_denied")
    missing = pg_login.model_copy(update={"database": "no such db " + unique_token()})
    failed(await check(ctx, missing, timeout=TIMEOUT), "unknown_database")


async def test_postgresql_peer_login_into_an_odd_database_name(ctx, scram) -> None:
    name = scram.database(PG_ODD_NAME_PREFIX + unique_token())
    peer = DbCredential(
        engine="postgresql", auth_method="socket", socket=scram.socket_dir, port=scram.port, database=name
    )
    result = await check(ctx, peer, timeout=TIMEOUT)
    assert result.ok and name in result.databases


# --- the rest ------------------------------------------------------------------------------------------------


async def test_missing_client_and_unreachable_server(ctx, make_sshd) -> None:
    failed(await check(ctx, DbCredential(engine="mongodb"), timeout=TIMEOUT), "client_missing")
    host = make_sshd("dbcheck-gone")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)], connect_timeout=3)
    host.stop()
    try:
        gone = ProbeContext(pool.transport(SSHTarget(host.host, host.port, host.user, host.host_public_key)))
        failed(await check(gone, DbCredential(engine="mysql", host="127.0.0.1"), timeout=TIMEOUT), "server_unreachable")
    finally:
        await pool.close()


async def test_passwords_never_appear_in_results_or_logs(ctx, mysql_login, pg_login, blackhole, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "BW-SECRET-" + unique_token()
    results = []
    for login in (mysql_login, pg_login):
        base = login.model_copy(update={"password": SecretStr(secret)})
        updates = [{}, {"port": free_port()}, {"host": "no-such-host.invalid"}, {"database": "nope"}]
        if login.engine == "mysql":  # one hung connection is enough (each waits the whole timeout)
            updates.append({"port": blackhole})
        for update in updates:
            results.append(await check(ctx, base.model_copy(update=update), timeout=2))
    assert not any(r.ok for r in results) and {r.failure for r in results} >= {"auth_failed", "refused", "timeout"}
    for result in results:
        for shown in (repr(result), str(result), result.model_dump_json(), result.message, result.fix):
            assert secret not in shown
    assert secret not in caplog.text
    assert secret not in repr(mysql_login.model_copy(update={"password": SecretStr(secret)}))
