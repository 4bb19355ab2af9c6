"""PostgreSQL globals (roles) restored from a chain's ``globals`` archive on the machine's real PostgreSQL, over a
real sshd host and real borg: roles missing on the server are created with their attributes, comment and
memberships in one transaction; a role that exists is reported and left exactly as it is (its attributes and
memberships unchanged), nothing is dropped; a script smuggling a second statement behind an allowed one is not run."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from bot.backup import restore_db
from bot.backup.sources.postgresql import PostgreSQLConfig, PostgreSQLFacts, PostgreSQLSource
from bot.probes import postgresql as pg_probe
from bot.probes.dbcheck import DbCredential
from tests.harness.databases import _psql
from tests.test_sources_support import run_job, source_host

__all__ = ["source_host"]
PEER = DbCredential(engine="postgresql", auth_method="socket")


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    base = f"bwr_{os.getpid()}_{secrets.token_hex(3)}"
    names = {"app": f"{base}_app", "group": f"{base}_group", "keep": f"{base}_keep"}
    yield names
    for name in names.values():
        _psql(f'DROP ROLE IF EXISTS "{name}"')


def _one(sql: str) -> str:
    return _psql(sql).stdout.strip()


async def test_missing_roles_are_created_and_existing_ones_reported_unchanged(source_host, ctx_for, roles) -> None:
    host, transport, repo = source_host
    app, group, keep = roles["app"], roles["group"], roles["keep"]
    _psql(f"CREATE ROLE \"{group}\" NOLOGIN; CREATE ROLE \"{app}\" LOGIN CONNECTION LIMIT 5 PASSWORD 'pw-of-app'; "
          f"COMMENT ON ROLE \"{app}\" IS 'the app''s login'; GRANT \"{group}\" TO \"{app}\"; "
          f'CREATE ROLE "{keep}" LOGIN CONNECTION LIMIT 5; GRANT "{group}" TO "{keep}"')  # fmt: skip
    hashed = _one(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{app}'")
    info = await pg_probe.probe(ctx_for(host))
    facts = PostgreSQLFacts(info=info, credential=PEER)
    jobs = PostgreSQLSource().plan(PostgreSQLConfig(databases=("postgres",)), facts)
    assert jobs[-1].suffix == "globals"
    assert (await run_job(transport, repo, jobs[-1], "globals-1")).error is None
    # Then the server changes: app and its group are gone, keep was changed by someone.
    _psql(f'DROP ROLE "{app}"; DROP ROLE "{group}"; ALTER ROLE "{keep}" CONNECTION LIMIT 3')
    result = await restore_db.restore_pg_globals(transport, repo, "globals-1", PEER)
    assert sorted(result.created) == sorted([app, group])
    assert keep in result.existing and "postgres" in result.existing
    assert result.memberships >= 1 and result.skipped >= 0
    assert _one(f"SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = '{app}'") == "t\t5"
    assert _one(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{app}'") == hashed  # the same hash, restored
    comment = _one(f"SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{app}'")
    assert comment == "the app's login"
    assert _one(f"SELECT pg_has_role('{app}', '{group}', 'MEMBER')") == "t"
    assert _one(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{group}'") == "f"
    # The existing role: not altered (connection limit as changed), no membership added to it.
    assert _one(f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{keep}'") == "3"
    assert _one(f"SELECT pg_has_role('{keep}', '{group}', 'MEMBER')") == "f"
    again = await restore_db.restore_pg_globals(transport, repo, "globals-1", PEER)
    assert again.created == () and app in again.existing  # nothing left to create: nothing run


def test_only_single_allowed_statements_about_new_roles_are_kept() -> None:
    script = "\n".join([
        "\\restrict abc", "SET standard_conforming_strings = on;", "CREATE ROLE n;", "CREATE ROLE old;",
        "ALTER ROLE n WITH LOGIN; DROP ROLE old;", "ALTER ROLE n WITH NOLOGIN CONNECTION LIMIT 2;",
        "ALTER ROLE old WITH SUPERUSER;", "COMMENT ON ROLE n IS $a$'$a$; DROP ROLE old; --';",
        "GRANT old TO n GRANTED BY postgres;", "GRANT n TO old;", "ALTER ROLE n IN DATABASE shop SET x TO 'y';",
        "CREATE TABLESPACE t OWNER n LOCATION '/srv/t';",
    ])  # fmt: skip
    kept, result = restore_db.roles_script(script, {"old", "postgres"})
    assert kept == ["SET standard_conforming_strings = on;", "CREATE ROLE n;",
                    "ALTER ROLE n WITH NOLOGIN CONNECTION LIMIT 2;", "GRANT old TO n;"]  # fmt: skip
    assert result.created == ("n",) and result.existing == ("old",) and result.memberships == 1
    assert result.skipped == 8  # CREATE ROLE old too: it exists
