"""MySQL/MariaDB source and restore against the machine's real MariaDB 10.11, over a real sshd host:
backup while money moves between accounts → restore into a new database → a consistent snapshot."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections.abc import Iterator

import asyncmy
import pytest

from bot.backup import restore_db
from bot.backup.sources.mysql import WITH_OPTION_FILE, MySQLConfig, MySQLFacts, MySQLSource
from bot.borg import create
from bot.borg import list as borg_list
from bot.probes import mysql as my_probe
from bot.probes.dbcheck import DbCredential
from tests.harness.databases import _mariadb
from tests.test_sources_support import install_stand_in, run_job, source_host

__all__ = ["source_host"]
ACCOUNTS, START = 20, 1_000
SOCKET_ROOT = DbCredential(engine="mysql", auth_method="socket")


async def connect(database: str) -> asyncmy.Connection:
    return await asyncmy.connect(host="127.0.0.1", port=3306, user="root", password="", database=database)


async def execute(database: str, *statements: str) -> None:
    conn = await connect(database)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
        await conn.commit()
    finally:
        conn.close()


async def fill(database: str) -> None:
    await execute(
        database,
        "CREATE TABLE a_accounts (id int PRIMARY KEY, balance bigint NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE m_filler (id int AUTO_INCREMENT PRIMARY KEY, payload text NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE z_ledger (id bigint AUTO_INCREMENT PRIMARY KEY, src int, dst int, amount bigint) ENGINE=InnoDB",
        f"INSERT INTO a_accounts SELECT seq, {START} FROM seq_1_to_{ACCOUNTS}",
        "INSERT INTO m_filler (payload) SELECT repeat(md5(seq), 8) FROM seq_1_to_60000",
    )


async def transfers(database: str, stop: asyncio.Event, done: list[int], warm: asyncio.Event) -> None:
    """Move money between random accounts, one transaction per transfer, each logged in z_ledger."""
    conn = await connect(database)
    rng = random.Random(5)
    try:
        async with conn.cursor() as cur:
            while not stop.is_set():
                a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
                amount = rng.randint(1, 90)
                await conn.begin()
                await cur.execute("UPDATE a_accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                await cur.execute("UPDATE a_accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                await cur.execute("INSERT INTO z_ledger (src, dst, amount) VALUES (%s, %s, %s)", (a, b, amount))
                await conn.commit()
                done[0] += 1
                if done[0] == 50:
                    warm.set()
    finally:
        conn.close()


async def snapshot_of(database: str) -> tuple[dict[int, int], list[tuple[int, int, int]], int]:
    conn = await connect(database)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT id, balance FROM a_accounts")
            balances = {int(i): int(b) for i, b in await cur.fetchall()}
            await cur.execute("SELECT src, dst, amount FROM z_ledger")
            ledger = [(int(s), int(d), int(a)) for s, d, a in await cur.fetchall()]
            await cur.execute("SELECT count(*) FROM m_filler")
            (filler,) = await cur.fetchone()
    finally:
        conn.close()
    return balances, ledger, int(filler)


def replay(ledger: list[tuple[int, int, int]]) -> dict[int, int]:
    balances = dict.fromkeys(range(1, ACCOUNTS + 1), START)
    for src, dst, amount in ledger:
        balances[src] -= amount
        balances[dst] += amount
    return balances


@pytest.fixture
def target_name() -> Iterator[str]:
    """A restore target named like the harness's throwaway databases (dropped here, or by its stale sweep)."""
    name = f"bwtest_{os.getpid()}_{secrets.token_hex(4)}"
    yield name
    _mariadb(f"DROP DATABASE IF EXISTS `{name}`")


async def test_backup_while_money_moves_then_restore_into_a_new_database(
    source_host, ctx_for, mariadb_db, target_name
) -> None:
    host, transport, repo = source_host
    await fill(mariadb_db.name)
    info = await my_probe.probe(ctx_for(host))  # the real probe: root through the socket
    assert info.credential is not None and info.credential.as_root and mariadb_db.name in info.server.databases
    [job] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,)), MySQLFacts(info=info, credential=SOCKET_ROOT))
    assert job.command[:5] == ("sh", "-c", WITH_OPTION_FILE, "sh", f"+{mariadb_db.name}") and "--" not in job.command
    assert job.command[5] == "mariadb-dump" and "--single-transaction" in job.command and job.secret_env == {}
    stop, warm, done = asyncio.Event(), asyncio.Event(), [0]
    writer = asyncio.create_task(transfers(mariadb_db.name, stop, done, warm))
    try:
        await asyncio.wait_for(warm.wait(), 30)
        before = done[0]
        run = await run_job(transport, repo, job, "mysql-1")
        during = done[0] - before
    finally:
        stop.set()
        await writer
    assert run.error is None and run.result.outcome == "ok", run.error
    assert during > 0, "no transfer happened while the dump ran: the test proves nothing"
    result = await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("mysql-1"), target_name, SOCKET_ROOT)
    assert result.created and result.source_database == mariadb_db.name
    balances, ledger, filler = await snapshot_of(target_name)
    assert sum(balances.values()) == ACCOUNTS * START  # the invariant
    assert balances == replay(ledger)  # balances and ledger come from one snapshot
    assert before <= len(ledger) <= done[0] and filler == 60_000


async def test_a_dump_killed_half_way_fails_the_job_and_leaves_no_archive(
    source_host, ctx_for, mariadb_db, mariadb_user
) -> None:
    host, transport, repo = source_host
    await fill(mariadb_db.name)
    install_stand_in(host, "mariadb-dump", "kill-half-way.sh", REAL="/usr/bin/mariadb-dump", BYTES="65536")
    login = mariadb_user(mariadb_db, password='my S3cret "quoted" \\ $HOME #x')
    credential = DbCredential(engine="mysql", host="127.0.0.1", port=3306, user=login.user, password=login.password)
    info = await my_probe.probe(ctx_for(host))
    [job] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,)), MySQLFacts(info=info, credential=credential))
    assert login.password not in " ".join(job.command) and login.password not in repr(job)
    run = await run_job(transport, repo, job, "mysql-killed")
    assert run.result is None and run.error is not None
    assert run.error.kind == "source" and "'sh' exited with status 137" in str(run.error), str(run.error)
    assert [a.name for a in await borg_list.archives(transport, repo)] == []
    # Without the stand-in the same job (the password through the option file on fd 5) succeeds.
    (host.workdir / "bin" / "mariadb-dump").unlink()
    assert (await run_job(transport, repo, job, "mysql-ok")).error is None
    assert [a.name for a in await borg_list.archives(transport, repo)] == ["mysql-ok"]


async def test_myisam_tables_are_dumped_under_lock_per_the_atomicity_verdict(source_host, ctx_for, mariadb_db) -> None:
    host, _, _ = source_host
    await execute(mariadb_db.name, "CREATE TABLE legacy (id int PRIMARY KEY) ENGINE=MyISAM")
    info = await my_probe.probe(ctx_for(host))
    facts = MySQLFacts(info=info, credential=SOCKET_ROOT)
    [locked] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,)), facts)
    assert "--lock-tables" in locked.command and "--single-transaction" not in locked.command
    assert "non-transactional" in locked.description
    [loose] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,), lock_non_transactional=False), facts)
    assert "--single-transaction" in loose.command and "NOT consistent" in loose.description


async def test_restore_retargets_alter_database_and_never_touches_the_source(
    source_host, ctx_for, mariadb_db, target_name
) -> None:
    """A routine created under another database collation makes mariadb-dump write ``ALTER DATABASE `<source>`
    …`` lines; restored elsewhere they must change the target, not the source."""
    host, transport, repo = source_host
    await execute(mariadb_db.name, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)",
                  "CREATE PROCEDURE p() SELECT count(*) FROM t",
                  f"ALTER DATABASE `{mariadb_db.name}` CHARACTER SET latin1 COLLATE latin1_swedish_ci")  # fmt: skip
    info = await my_probe.probe(ctx_for(host))
    [job] = MySQLSource().plan(MySQLConfig(databases=(mariadb_db.name,)), MySQLFacts(info=info, credential=SOCKET_ROOT))
    assert (await run_job(transport, repo, job, "mysql-2")).error is None
    with pytest.raises(restore_db.RestoreRefused, match="the database this dump was taken from"):
        await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("mysql-2"), mariadb_db.name, SOCKET_ROOT)
    with pytest.raises(restore_db.RestoreRefused, match="already exists"):
        await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("mysql-2"), "mysql", SOCKET_ROOT)
    await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("mysql-2"), target_name, SOCKET_ROOT)
    charset = "SELECT default_character_set_name FROM information_schema.schemata WHERE schema_name = '{}'"
    assert _mariadb(charset.format(mariadb_db.name)).stdout.strip() == "latin1"  # the source: as it was
    assert _mariadb(charset.format(target_name)).stdout.strip() == "latin1"  # the copy: like the source
    assert _mariadb("CALL p()", database=target_name).stdout.strip() == "2"
    routines = "SELECT routine_schema FROM information_schema.routines WHERE routine_name = 'p' ORDER BY 1"
    assert sorted(_mariadb(routines).stdout.split()) == sorted([mariadb_db.name, target_name])


async def test_a_failing_restore_drops_the_database_it_created(source_host, target_name) -> None:
    _, transport, repo = source_host
    garbage = create.command_argv(repo, "mysql-bad", "shop.sql", ("echo", "this is not SQL;"), create.CreateOptions())
    await create.run(transport, repo, garbage)
    with pytest.raises(restore_db.RestoreFailed) as failed:
        await restore_db.restore_mysql(transport, repo, restore_db.DumpRef("mysql-bad"), target_name, SOCKET_ROOT)
    assert failed.value.stage == "restore" and "ERROR 1064" in failed.value.reason and failed.value.hint
    assert "was dropped again" in failed.value.cleanup
    assert _mariadb(f"SHOW DATABASES LIKE '{target_name}'").stdout.strip() == ""
