"""Database restores through the service and the queue beyond a plain dump: a PostgreSQL dump with the server's
roles (the same backup's ``globals`` archive) on the machine's real PostgreSQL over real sshd and real borg — missing
roles created, existing ones reported and left exactly as they are, the report naming both; roles are admins' only
(a member asking is refused before anything) and a backup without globals is a sentence. And a MongoDB dump archive
restored into a new name through the queue with STAND-INs for mongodump, mongorestore and mongosh
(tests/data/sources/*-standin.sh; no MongoDB server or tools can be installed here), labelled as such: the counts
in the result are what the mongosh stand-in prints."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.access import Forbidden, Refused
from bot.backup.sources.mongodb import MongoDBConfig, MongoDBSource
from bot.runs.execute import Executor
from bot.runs.notify import restore_facts
from bot.runs.queue import RunSpec, SqlQueue
from bot.services import restores
from bot.services.restores import RestoreRequest
from storage.models import AuditLog, BackupChain, BackupSource, BackupType, Role, RoleGrant, Run, RunKind, RunStatus
from storage.tenancy import Tenant
from tests.harness.databases import _psql
from tests.test_restore import actor, execute_next
from tests.test_run_worker import make_chain
from tests.test_sources_mongodb import expected_stream, facts
from tests.test_sources_support import install_stand_in, run_job
from tests.test_wizard_step_pool_repo import TEAM, World, build_world


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "rq")
    yield w
    await w.services.pool.close()


@pytest.fixture
def roles() -> Iterator[dict[str, Any]]:
    base = f"bwq_{os.getpid()}_{secrets.token_hex(3)}"
    names: dict[str, Any] = {"app": f"{base}_app", "group": f"{base}_group", "keep": f"{base}_keep",
                             "db": f"{base}_db", "db2": f"{base}_db2", "created": []}  # fmt: skip
    yield names
    for db in (names["db"], names["db2"]):
        _psql(f'DROP DATABASE IF EXISTS "{db}"')
    for name in [names["app"], names["keep"], names["group"], *names["created"]]:
        _psql(f'DROP ROLE IF EXISTS "{name}"')


def _one(sql: str, database: str = "postgres") -> str:
    return _psql(sql, database=database).stdout.strip()


async def _pg_backup(world: World, database: str, *, include_globals: bool = True) -> tuple[BackupChain, str]:
    """A PostgreSQL chain of ``database`` backed up once through the queue; the dump archive's name."""
    chain = await BackupChain.filter(name="web1-pg").first() or await make_chain(world, "web1-pg")
    await BackupSource.filter(chains__id=chain.id).update(
        type=BackupType.POSTGRESQL, config={"databases": [database], "include_globals": include_globals})
    queue = SqlQueue()
    await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
    claimed = await queue.claim("t")
    assert claimed is not None
    done = await Executor(queue, world.services)(claimed)
    assert done.status == RunStatus.SUCCEEDED, done.error
    names = [a.name for a in await restores.archive_names(actor(), chain, world.services)]
    return chain, max(n for n in names if "-pg-" in n)


async def test_postgresql_restore_with_the_servers_roles_through_the_queue(world: World, postgres_db: Any,
                                                                          roles: dict[str, Any]) -> None:  # fmt: skip
    app, group, keep = roles["app"], roles["group"], roles["keep"]
    _psql(f'CREATE ROLE "{group}" NOLOGIN; CREATE ROLE "{app}" LOGIN CONNECTION LIMIT 5; GRANT "{group}" TO "{app}"; '
          f'CREATE ROLE "{keep}" LOGIN CONNECTION LIMIT 5')  # fmt: skip
    _psql(f'CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 9); '
          f'ALTER TABLE orders OWNER TO "{app}"', database=postgres_db.name)  # fmt: skip
    chain, archive = await _pg_backup(world, postgres_db.name)
    _psql('ALTER TABLE orders OWNER TO postgres', database=postgres_db.name)
    _psql(f'DROP ROLE "{app}"; DROP ROLE "{group}"; ALTER ROLE "{keep}" CONNECTION LIMIT 3')  # the server changed
    request = RestoreRequest(chain.name, archive, roles["db"], what="database", globals=True)

    # A member (an operator of the chain's server, not an admin) asking for the roles: refused before anything.
    await Tenant(TEAM).create(RoleGrant, role=Role.OPERATOR, subject="U2", server=world.server)
    with pytest.raises(Forbidden, match="Only admins can restore a server's roles") as refused:
        await restores.request_restore(actor("U2", admin=False), request, services=world.services)
    assert "." == refused.value.sentence[-1] and refused.value.sentence.count(". ") == 0
    assert await Run.filter(kind=RunKind.RESTORE).count() == 0
    assert _one(f"SELECT count(*) FROM pg_roles WHERE rolname IN ('{app}', '{group}')") == "0"
    audited = await AuditLog.filter(action="chain.restore").values_list("details", flat=True)
    assert [d.get("outcome") for d in audited] == ["refused"]

    asked = await restores.request_restore(actor(), request, services=world.services)
    assert asked.spec.globals_archive and "-globals-" in asked.spec.globals_archive
    assert asked.spec.globals_archive.rsplit("-", 1)[1] == archive.rsplit("-", 1)[1]  # the same backup's
    assert "roles" in asked.spec.described()
    done = await execute_next(world)
    assert done.status == RunStatus.SUCCEEDED, done.error
    result = done.stats["restore"]
    roles["created"].extend(result["roles"]["roles_created"])  # whatever it created goes again after the test
    assert {app, group} <= set(result["roles"]["roles_created"])
    assert keep in result["roles"]["roles_existing"] and "postgres" in result["roles"]["roles_existing"]
    assert _one(f"SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = '{app}'") == "t\t5"
    assert _one(f"SELECT pg_has_role('{app}', '{group}', 'MEMBER')") == "t"
    assert _one(f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{keep}'") == "3"  # untouched
    assert result["database"]["tables"] == {"public.orders": 9}
    owner = _one("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", database=roles["db"])
    assert owner == app  # the dump's owner exists again, so the restore kept it
    stored = await Run.get(id=done.id)
    facts_text = dict(restore_facts(stored.spec, stored.spec["result"]))
    assert app in facts_text["Roles"].split("existed already")[0] and keep in facts_text["Roles"].split(
        "existed already")[1]  # created named first, then those that existed  # fmt: skip

    # The surfaces: the Slack "where" step offers the roles to admins only; the CLI's --globals reaches the request.
    from bot.slack import restore as slack_restore

    draft = {"chain_id": chain.id, "what": "database", "archive": archive}
    admin_blocks = await slack_restore._where_blocks(actor(), draft, world.services)
    member_blocks = await slack_restore._where_blocks(actor("U2", admin=False), draft, world.services)
    assert "roles" in [b.get("block_id") for b in admin_blocks]
    assert "roles" not in [b.get("block_id") for b in member_blocks]
    assert slack_restore.request_of({**draft, "roles": True, "target": "x"}).globals
    assert slack_restore._block_of("where", refused.value.sentence) == "roles"
    await _cli_globals(chain.name, archive)

    # A backup made without the globals: asking for the roles is a sentence, nothing queued.
    _, bare = await _pg_backup(world, postgres_db.name, include_globals=False)
    with pytest.raises(Refused, match="has no roles archive"):
        await restores.request_restore(actor(), RestoreRequest(chain.name, bare, roles["db2"], what="database",
                                                               globals=True), services=world.services)  # fmt: skip
    assert await Run.filter(kind=RunKind.RESTORE).count() == 1


async def test_stand_in_mongodb_dump_restored_into_a_new_name_through_the_queue(world: World) -> None:
    """STAND-INs (labelled): mongodump made the archive; mongorestore and mongosh on the pool host are stand-ins."""
    chain = await make_chain(world, "web1-mongo")
    await BackupSource.filter(chains__id=chain.id).update(type=BackupType.MONGODB, config={"databases": ["shop"]})
    host = world.pool_host
    install_stand_in(host, "mongodump", "mongodump-standin.sh", RECORD=str(host.workdir / "dump"), LINES="500",
                     FAIL="no")  # fmt: skip
    transport, repo, borg = await restores.pool_side(chain, world.services)
    [job] = MongoDBSource().plan(MongoDBConfig(databases=("shop",)), facts("mongo_replset.txt"))
    archive = "web1-mongo-mongo-shop-20260301T020000"
    assert (await run_job(transport, repo, job, archive, borg=borg)).error is None
    record, state = host.workdir / "restore", host.workdir / "mongo-state"
    install_stand_in(host, "mongorestore", "mongorestore-standin.sh", RECORD=str(record), STATE=str(state), FAIL="no")
    install_stand_in(host, "mongosh", "mongosh-counts-standin.sh", RECORD=str(record), STATE=str(state),
                     EXISTING="taken")  # fmt: skip
    request = RestoreRequest(chain.name, archive, "taken", what="database", server="vault")
    with pytest.raises(Refused, match="already exists"):  # the stand-in says "taken" exists: refused before
        await restores.request_restore(actor(), request, services=world.services)
    with pytest.raises(Refused, match="only be restored with a PostgreSQL dump"):
        await restores.request_restore(actor(), RestoreRequest(chain.name, archive, "shop_copy", what="database",
                                                               server="vault", globals=True), services=world.services)
    mongo = RestoreRequest(chain.name, archive, "shop_copy", what="database", server="vault")
    asked = await restores.request_restore(actor(), mongo, services=world.services)
    assert asked.spec.engine == "mongodb" and asked.spec.via == "pool" and asked.spec.source_database == "shop"
    done = await execute_next(world)
    assert done.status == RunStatus.SUCCEEDED, done.error
    database = done.stats["restore"]["database"]
    assert (database["engine"], database["source_database"], database["target"]) == ("mongodb", "shop", "shop_copy")
    assert database["tables"] == {"orders": 3, "users": 2}  # as the mongosh stand-in counted them
    args = (record.parent / f"{record.name}.args").read_text().splitlines()
    assert "--nsFrom=shop.*" in args and "--nsTo=shop_copy.*" in args
    assert (record.parent / f"{record.name}.stdin").read_text().strip() == hashlib.sha256(
        expected_stream(500)).hexdigest()  # the dump streamed from borg into mongorestore unchanged
    text = dict(restore_facts((await Run.get(id=done.id)).spec, done.stats["restore"]))
    assert text["Checked"] == "the restore tool succeeded; 2 collections, 5 documents"


async def _cli_globals(chain: str, archive: str) -> None:
    import argparse

    from bot.cli import UsageError
    from bot.cli import restore as cli_restore

    parser = argparse.ArgumentParser()
    cli_restore.add_parser(parser.add_subparsers())
    args = parser.parse_args(["restore", "--team", TEAM, chain, archive, "--database", "d", "--as", "n", "--globals"])
    assert cli_restore.request_of(args).globals and cli_restore.request_of(args).what == "database"
    files = parser.parse_args(["restore", "--team", TEAM, chain, archive, "--to", "/srv/x", "--globals"])
    with pytest.raises(UsageError, match="--globals goes with a database restore"):
        cli_restore.request_of(files)
