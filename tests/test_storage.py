"""The data layer on SQLite, PostgreSQL and MariaDB: migrations, every model, secrets at rest, tenancy."""

from __future__ import annotations

import uuid

import pytest
from tortoise import Tortoise
from tortoise.exceptions import DoesNotExist, IntegrityError

from storage import db
from storage.crypto import Keyring, Secret, generate_key, install_keyring
from storage.errors import SecretKeyError, TenantScopeError
from storage.models import (
    Approval,
    AuditLog,
    BackupChain,
    BackupSource,
    BackupTemplate,
    BackupType,
    BotIdentity,
    ChainStatus,
    DatabaseCredential,
    Repository,
    Run,
    RunKind,
    Server,
    StoragePool,
    WizardSession,
    Workspace,
)
from storage.rotate import encrypted_columns, rotate_all
from storage.tenancy import Tenant

pytestmark = pytest.mark.storage

PLAIN = {
    "db_password": "s3cr3t-db-pässword",
    "passphrase": "borg passphrase with spaces",
    "key_export": "BORG_KEY 0123456789abcdef",
    "client_key": "-----BEGIN OPENSSH PRIVATE KEY-----client",
    "bot_key": "-----BEGIN OPENSSH PRIVATE KEY-----bot",
}


async def _raw_rows() -> str:
    """Every row of every table as text, read with plain SQL (no field conversion)."""
    conn = Tortoise.get_connection("default")
    dump = []
    for model in encrypted_columns():
        rows = await conn.execute_query_dict(f"SELECT * FROM {model._meta.db_table}")
        dump.append(repr(rows))
    return "\n".join(dump)


async def _populate(team: str = "T0001") -> dict:
    tenant = Tenant(team)
    await Workspace.create(team_id=team, name="Acme")
    await BotIdentity.create(key_type="ssh-ed25519", public_key="ssh-ed25519 AAAA", private_key=PLAIN["bot_key"])
    server = await tenant.create(Server, name="web 1", host="10.1.2.3", port=2222)
    cred = await tenant.create(
        DatabaseCredential, server=server, db_type="mysql", port=3306, username="backup", password=PLAIN["db_password"]
    )
    pool = await tenant.create(StoragePool, name="pool-a", server=server, base_path="/srv/borg")
    repo = await tenant.create(
        Repository,
        pool=pool,
        name="web1-files",
        path="/srv/borg/web1-files",
        passphrase=PLAIN["passphrase"],
        key_export=PLAIN["key_export"],
        client_key_private=PLAIN["client_key"],
        retention={"keep_daily": 7},
        pre_backup_commands=["sync"],
    )
    source = await tenant.create(
        BackupSource, server=server, name="etc", type=BackupType.FILES, config={"paths": ["/etc"]}
    )
    template = await tenant.create(BackupTemplate, name="std", backup_type=BackupType.FILES, retention_policy={"d": 7})
    chain = await tenant.create(
        BackupChain, name="web1 nightly", repository=repo, schedule={"days": ["mon"], "at": "02:00"}, template=template
    )
    await chain.sources.add(source)
    await tenant.create(WizardSession, id=uuid.uuid4(), user_id="U1", state="server", data={"a": [1, "é"]})
    await tenant.create(Run, chain=chain, repository=repo, kind=RunKind.BACKUP, stats={"files": 3})
    await tenant.create(Approval, chain=chain, requested_by="U1")
    await tenant.create(AuditLog, actor="U1", action="chain.create", object_type="chain", object_id=str(chain.id))
    return {"server": server, "cred": cred, "repo": repo, "chain": chain}


async def test_migrations_are_idempotent_and_schema_is_usable(database: str) -> None:
    assert await db.pending_migrations(database) == []
    await db.run_migrations(database)  # second application is a no-op
    await db.connect(database, migrate=False)
    objects = await _populate()
    chain = await BackupChain.get(id=objects["chain"].id).prefetch_related("sources", "repository__pool")
    assert [s.name for s in await chain.sources.all()] == ["etc"]
    assert chain.repository.pool.base_path == "/srv/borg"
    assert (await WizardSession.get(user_id="U1")).data == {"a": [1, "é"]}
    assert (await Run.get(chain_id=chain.id)).stats == {"files": 3}


async def test_unique_names_per_workspace(database: str) -> None:
    await Tenant("T0001").create(Server, name="db", host="h1")
    await Tenant("T0002").create(Server, name="db", host="h2")  # same name, other workspace: fine
    with pytest.raises(IntegrityError):
        await Tenant("T0001").create(Server, name="db", host="h3")


async def test_migrated_tables_keep_their_unique_names(database: str) -> None:
    """Every unique (workspace, name) pair holds after all migrations, on every engine (SQLite table rebuilds once
    lost them: storage.migration_ops)."""
    objects = await _populate()
    repo, tenant = objects["repo"], Tenant("T0001")
    with pytest.raises(IntegrityError):
        await tenant.create(BackupChain, name="web1 nightly", repository=repo)
    with pytest.raises(IntegrityError):
        await tenant.create(BackupTemplate, name="std", backup_type=BackupType.FILES)
    await Tenant("T0002").create(BackupChain, name="web1 nightly", repository=repo)  # another workspace: fine


async def test_sqlite_migrations_give_the_models_indexes(tmp_path) -> None:
    """The schema the migrations build on SQLite has exactly the indexes the models declare (as a schema generated
    straight from the models has), so no migration's table rebuild silently drops one."""
    import sqlite3

    def indexes(path) -> dict[str, set[tuple[tuple[str, ...], bool]]]:
        found: dict[str, set[tuple[tuple[str, ...], bool]]] = {}
        with sqlite3.connect(path) as conn:
            for table, name in conn.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'"):
                if table == "tortoise_migrations":
                    continue
                columns = tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{name}')"))
                unique = next(bool(r[2]) for r in conn.execute(f"PRAGMA index_list('{table}')") if r[1] == name)
                found.setdefault(table, set()).add((columns, unique))
        return found

    migrated, generated = tmp_path / "migrated.sqlite3", tmp_path / "generated.sqlite3"
    async with db.database(f"sqlite://{migrated}"):
        pass
    await Tortoise.init(config=db.tortoise_config(f"sqlite://{generated}"))
    try:
        await Tortoise.generate_schemas()
    finally:
        await Tortoise.close_connections()
    assert indexes(migrated) == indexes(generated)


async def test_secrets_are_never_stored_in_plaintext(database: str) -> None:
    objects = await _populate()
    raw = await _raw_rows()
    for secret in PLAIN.values():
        assert secret not in raw
    assert raw.count("fernet:") == len(PLAIN)
    cred = await DatabaseCredential.get(id=objects["cred"].id)
    assert isinstance(cred.password, Secret)
    assert cred.password.reveal() == PLAIN["db_password"]
    assert PLAIN["db_password"] not in repr(cred.password) + str(cred.password)
    # The instance that was created holds no plaintext either once saved.
    assert isinstance(objects["cred"].password, Secret)


async def test_a_typed_secret_that_starts_like_a_stored_one_is_still_encrypted(database: str) -> None:
    """A password someone typed as ``fernet:…`` is plaintext: it is sealed and comes back as typed."""
    objects = await _populate()
    for typed in ("fernet:abc", "fernet:gAAAAABkZXY=", "fernet:"):
        row = await DatabaseCredential.create(team_id="T0001", server=objects["server"], db_type="mysql", port=3306,
                                              username="u", password=typed)  # fmt: skip
        assert (await DatabaseCredential.get(id=row.id)).password.reveal() == typed
        assert typed not in await _raw_rows() or typed == "fernet:"


async def test_reassigning_a_secret_encrypts_it(database: str) -> None:
    objects = await _populate()
    cred = objects["cred"]
    cred.password = "new-pass-123"
    await cred.save()
    assert "new-pass-123" not in await _raw_rows()
    assert (await DatabaseCredential.get(id=cred.id)).password.reveal() == "new-pass-123"


async def test_rotation_reencrypts_everything_under_the_new_key(database: str, keyring: Keyring) -> None:
    await _populate()
    before = await _raw_rows()
    new_key = generate_key()
    rotated = Keyring([new_key, *keyring.keys])
    install_keyring(rotated)
    report = await rotate_all(rotated)
    assert report.secrets == len(PLAIN)
    after = await _raw_rows()
    assert after != before
    for secret in PLAIN.values():
        assert secret not in after
    # Only the new key is needed now; the old key alone can no longer read anything.
    install_keyring(Keyring([new_key]))
    repo = await Repository.get(name="web1-files")
    assert repo.passphrase.reveal() == PLAIN["passphrase"]
    assert (await BotIdentity.get(name="default")).private_key.reveal() == PLAIN["bot_key"]
    install_keyring(Keyring(keyring.keys))
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        (await Repository.get(name="web1-files")).passphrase.reveal()


async def test_rotation_without_the_old_key_changes_nothing(database: str) -> None:
    await _populate()
    before = await _raw_rows()
    stranger = Keyring([generate_key()])
    with pytest.raises(SecretKeyError, match="no key in BACKUPBOT_SECRET_KEYS decrypts it"):
        await rotate_all(stranger)
    assert await _raw_rows() == before


async def test_unknown_key_gives_a_clear_error_without_the_secret(database: str) -> None:
    await _populate()
    install_keyring(Keyring([generate_key()]))
    cred = await DatabaseCredential.get(username="backup")
    with pytest.raises(SecretKeyError) as info:
        cred.password.reveal()
    assert "BACKUPBOT_SECRET_KEYS" in str(info.value)
    assert PLAIN["db_password"] not in str(info.value)


async def test_tenant_scope_hides_other_workspaces(database: str) -> None:
    a, b = Tenant("T000A"), Tenant("T000B")
    server = await a.create(Server, name="a-only", host="10.0.0.1")
    assert await b.query(Server).count() == 0
    with pytest.raises(DoesNotExist):
        await b.get(Server, id=server.id)
    assert (await a.get(Server, id=server.id)).name == "a-only"
    with pytest.raises(TenantScopeError):
        await a.create(Server, name="x", host="h", team_id="T000B")
    with pytest.raises(TenantScopeError):
        a.query(Workspace)
    for bad in ("", "T1; DROP", None):
        with pytest.raises(TenantScopeError):
            Tenant(bad)  # type: ignore[arg-type]


async def test_only_one_default_credential_per_server_and_type(database: str) -> None:
    objects = await _populate()
    tenant = Tenant("T0001")
    second = await tenant.create(
        DatabaseCredential, server=objects["server"], db_type="mysql", port=3307, username="other", password="pw2"
    )
    await objects["cred"].make_default()
    await second.make_default()
    defaults = await tenant.query(DatabaseCredential).filter(is_default=True).values_list("username", flat=True)
    assert defaults == ["other"]


async def test_chain_status_defaults_to_draft(database: str) -> None:
    objects = await _populate()
    assert objects["chain"].status == ChainStatus.DRAFT
    await BackupChain.filter(id=objects["chain"].id).update(status=ChainStatus.PENDING_APPROVAL)
    assert (await BackupChain.get(id=objects["chain"].id)).status is ChainStatus.PENDING_APPROVAL
