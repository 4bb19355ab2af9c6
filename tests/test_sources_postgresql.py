"""PostgreSQL source and restore against the machine's real PostgreSQL 15, over a real sshd host:
backup while money moves between accounts → restore into a new database → a consistent snapshot."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections.abc import Iterator

import asyncpg
import pytest

from bot.backup import restore_db
from bot.backup.sources.postgresql import AS_USER, PostgreSQLConfig, PostgreSQLFacts, PostgreSQLSource
from bot.borg import list as borg_list
from bot.probes import postgresql as pg_probe
from bot.probes.dbcheck import DbCredential
from tests.harness.databases import _psql
from tests.test_sources_support import extract_stdout, install_stand_in, run_job, source_host

__all__ = ["source_host"]
ACCOUNTS, START = 20, 1_000
PEER = DbCredential(engine="postgresql", auth_method="socket")


def dsn(database: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{database}"


async def fill(database: str) -> None:
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(
            "CREATE TABLE a_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
            "CREATE TABLE m_filler (id serial PRIMARY KEY, payload text NOT NULL);"
            "CREATE TABLE z_ledger (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint);"
            f"INSERT INTO a_accounts SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) g;"
            "INSERT INTO m_filler (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 120000) g;"
        )
    finally:
        await conn.close()


async def transfers(database: str, stop: asyncio.Event, done: list[int], warm: asyncio.Event) -> None:
    """Move money between random accounts, one transaction per transfer, each logged in z_ledger; ``warm`` is
    set after 50 transfers."""
    conn = await asyncpg.connect(dsn(database))
    rng = random.Random(4)
    try:
        while not stop.is_set():
            a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount = rng.randint(1, 90)
            async with conn.transaction():
                await conn.execute("UPDATE a_accounts SET balance = balance - $1 WHERE id = $2", amount, a)
                await conn.execute("UPDATE a_accounts SET balance = balance + $1 WHERE id = $2", amount, b)
                await conn.execute("INSERT INTO z_ledger (src, dst, amount) VALUES ($1, $2, $3)", a, b, amount)
            done[0] += 1
            if done[0] == 50:
                warm.set()
    finally:
        await conn.close()


async def snapshot_of(database: str) -> tuple[dict[int, int], list[tuple[int, int, int]], int]:
    conn = await asyncpg.connect(dsn(database))
    try:
        balances = {r["id"]: r["balance"] for r in await conn.fetch("SELECT id, balance FROM a_accounts")}
        ledger = [(r["src"], r["dst"], r["amount"]) for r in await conn.fetch("SELECT src, dst, amount FROM z_ledger")]
        filler = await conn.fetchval("SELECT count(*) FROM m_filler")
    finally:
        await conn.close()
    return balances, ledger, filler


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
    _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    _psql(f'DROP DATABASE IF EXISTS "{name}"')


async def test_backup_while_money_moves_then_restore_into_a_new_database(
    source_host, ctx_for, postgres_db, target_name
) -> None:
    host, transport, repo = source_host
    await fill(postgres_db.name)
    info = await pg_probe.probe(ctx_for(host))  # the real probe's facts: peer access as postgres
    assert info.access is not None and info.access.method == "peer" and postgres_db.name in info.server.databases
    config = PostgreSQLConfig(databases=(postgres_db.name,))
    dump_job, globals_job = PostgreSQLSource().plan(config, PostgreSQLFacts(info=info, credential=PEER))
    assert dump_job.command[:6] == ("sh", "-c", AS_USER, "sh", "postgres", "pg_dump")
    assert "--compress=0" in dump_job.command and "--" not in dump_job.command
    stop, warm, done = asyncio.Event(), asyncio.Event(), [0]
    writer = asyncio.create_task(transfers(postgres_db.name, stop, done, warm))
    try:
        await asyncio.wait_for(warm.wait(), 30)
        before = done[0]
        run = await run_job(transport, repo, dump_job, "pg-1")
        during = done[0] - before
    finally:
        stop.set()
        await writer
    assert run.error is None and run.result.outcome == "ok", run.error
    assert during > 0, "no transfer happened while the dump ran: the test proves nothing"
    await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("pg-1"), target_name, PEER)
    balances, ledger, filler = await snapshot_of(target_name)
    assert sum(balances.values()) == ACCOUNTS * START  # the invariant
    assert balances == replay(ledger)  # balances and ledger come from one snapshot
    assert before <= len(ledger) <= done[0] and filler == 120_000
    globals_run = await run_job(transport, repo, globals_job, "globals-1")
    assert globals_run.error is None
    assert b"CREATE ROLE postgres" in await extract_stdout(transport, repo, "globals-1")


async def test_a_dump_killed_half_way_fails_the_job_and_leaves_no_archive(
    source_host, ctx_for, postgres_db, postgres_role
) -> None:
    host, transport, repo = source_host
    await fill(postgres_db.name)
    install_stand_in(host, "pg_dump", "kill-half-way.sh", REAL="/usr/bin/pg_dump", BYTES="65536")
    login = postgres_role(postgres_db, password="pg S3cret 'quoted' $HOME")
    _psql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{login.user}";'
          f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO "{login.user}"', database=postgres_db.name)  # fmt: skip
    credential = DbCredential(engine="postgresql", host="127.0.0.1", port=5432, user=login.user,
                              password=login.password, database=postgres_db.name)  # fmt: skip
    info = await pg_probe.probe(ctx_for(host))
    [job, _] = PostgreSQLSource().plan(PostgreSQLConfig(databases=(postgres_db.name,)),
                                       PostgreSQLFacts(info=info, credential=credential))  # fmt: skip
    assert job.secret_env == {"PGPASSWORD": login.password} and login.password not in " ".join(job.command)
    run = await run_job(transport, repo, job, "pg-killed")
    assert run.result is None and run.error is not None
    assert run.error.kind == "source" and "'pg_dump' exited with status 137" in str(run.error), str(run.error)
    assert login.password not in str(run.error)
    assert [a.name for a in await borg_list.archives(transport, repo)] == []


async def test_restore_refuses_the_source_and_existing_databases_and_cleans_up_a_failure(
    source_host, ctx_for, postgres_db, target_name
) -> None:
    host, transport, repo = source_host
    await fill(postgres_db.name)
    info = await pg_probe.probe(ctx_for(host))
    dump_job, globals_job = PostgreSQLSource().plan(PostgreSQLConfig(databases=(postgres_db.name,)),
                                                    PostgreSQLFacts(info=info, credential=PEER))  # fmt: skip
    for job, name in ((dump_job, "pg-2"), (globals_job, "globals-2")):
        assert (await run_job(transport, repo, job, name)).error is None
    with pytest.raises(restore_db.RestoreRefused, match="the database this dump was taken from"):
        await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("pg-2"), postgres_db.name, PEER)
    with pytest.raises(restore_db.RestoreRefused, match="already exists"):
        await restore_db.restore_postgresql(transport, repo, restore_db.DumpRef("pg-2"), "postgres", PEER)
    balances, _, _ = await snapshot_of(postgres_db.name)
    assert balances == dict.fromkeys(range(1, ACCOUNTS + 1), START)  # the source was not touched
    # A plain-SQL archive is not a pg_dump archive: pg_restore fails, and the target it got is dropped again.
    with pytest.raises(restore_db.RestoreFailed) as failed:
        await restore_db.restore_postgresql(
            transport, repo, restore_db.DumpRef("globals-2", source_database=postgres_db.name), target_name, PEER
        )
    assert failed.value.stage == "restore" and "pg_restore exited with status 1" in failed.value.reason
    assert "was dropped again" in failed.value.cleanup
    assert _psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target_name}'").stdout.strip() == "0"
