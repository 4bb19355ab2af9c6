"""When the bot itself is lost (issue 14, deliver 6): the README's recovery procedure, end to end on real parts.

An install made with ``backup-bot init`` (SQLite) reaches a real source and a real pool (sshd on loopback) with its
own SSH identity; a chain is made the normal way (the wizard's create) and backed up by the worker. ``backup-bot
escrow export`` (a real process) writes the bundle. Then a *new* install — new data directory, new settings keys,
a PostgreSQL database — is made with ``init`` and ``escrow import``, and using only what that install holds (its
database, its keys: the imported passphrase and SSH identity) the archive is restored through the bot's own code
(``pool_transport`` / ``pool_borg`` / ``Repo`` / ``restore_paths``) and every file's checksum, mode and link compared
with the original; the chain then backs up again from the new install. The refusals (wrong passphrase, a flipped
byte, an existing file without --force, an occupied database) are each one sentence, exit 2, nothing written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dotenv import dotenv_values
from pydantic import SecretStr

from bot.access import Actor, Refused, StaticDirectory
from bot.backup.plan import pool_borg, pool_transport
from bot.backup.restore import archives, restore_paths
from bot.borg import key as borg_key
from bot.borg.repo import Repo
from bot.flows.wizard.services import WizardServices
from bot.identity import load_private_key
from bot.runs.execute import Executor
from bot.runs.queue import RunSpec, SqlQueue
from bot.runs.worker import Worker
from bot.services import escrow as escrow_service
from bot.transport import SSHPool
from storage import db, escrow
from storage.crypto import Keyring, Secret, generate_key, install_keyring
from storage.models import (
    AuditLog,
    BackupChain,
    BotIdentity,
    ChainStatus,
    DatabaseCredential,
    DbType,
    Integrity,
    Repository,
    Role,
    RoleGrant,
    Run,
    RunStatus,
    Server,
    StoragePool,
    VerifiedArchive,
    Workspace,
)
from tests.test_run_worker import make_chain
from tests.test_wizard_step_pool_repo import TEAM, World, server_row

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))
BIN = Path(sys.executable).parent / "backup-bot"
PASSPHRASE = "correct horse battery staple, escrow"
LOGIN_PASSWORD = "BW-login-Secret-93f1"
T = TypeVar("T")


def cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``backup-bot ARGS`` as a real process in ``cwd`` (its .env there); standard input is never a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def flat(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    return " ".join((result.stdout + result.stderr).split())


def refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one sentence naming the problem, nothing else."""
    text = flat(result)
    assert result.returncode == 2, text
    assert result.stderr.count("error:") == 1, result.stderr
    for fragment in fragments:
        assert fragment in text, text


async def in_db(url: str, keys: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` against the install at ``url`` with its keys (connected, then closed again)."""
    install_keyring(Keyring(keys))
    try:
        async with db.database(url, migrate=False):
            return await work()
    finally:
        install_keyring(None)


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``root``: files by mode and SHA-256, links by target, directories by mode."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[rel] = ("dir", stat.S_IMODE(info.st_mode))
        else:
            found[rel] = ("file", stat.S_IMODE(info.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def install(where: Path, database_url: str | None = None) -> tuple[str, str]:
    """``backup-bot init`` in a new directory (its data directory inside); returns (database URL, settings keys)."""
    where.mkdir()
    if database_url:
        (where / ".env").write_text(f"DATABASE_URL={database_url}\n")
    done = cli(where, "init")
    assert done.returncode == 0, done.stdout + done.stderr
    keys = dotenv_values(where / ".env")["BACKUPBOT_SECRET_KEYS"]
    return database_url or f"sqlite://{where / 'data' / 'backup-bot.sqlite3'}", str(keys)


def fill(www: Path) -> None:
    """Files worth comparing: odd names, modes, a link, binary content."""
    (www / "a name with spaces & ünïcode.txt").write_text("special\n")
    secret = www / "private.key"
    secret.write_bytes(os.urandom(4096))
    secret.chmod(0o600)
    (www / "img" / "big.bin").write_bytes(os.urandom(300_000))
    (www / "latest").symlink_to("index.html")
    tool = www / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o750)


async def backed_up(services: WizardServices, chain_id: int) -> Run:
    """Run one backup of the chain through the queue and the worker, as the scheduler would."""
    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, services), poll=0.2)
    await worker.start()
    try:
        run = await queue.enqueue(RunSpec(TEAM, chain_id=chain_id, requested_by="U1"))
        worker.wake()
        deadline = asyncio.get_running_loop().time() + 120
        while (await Run.get(id=run.id)).status in (RunStatus.QUEUED, RunStatus.RUNNING):
            assert asyncio.get_running_loop().time() < deadline, "the backup did not finish"
            await asyncio.sleep(0.2)
    finally:
        await worker.stop(grace=5)
    return await Run.get(id=run.id)


async def old_bot(tmp_path: Path, make_sshd: Any, url: str) -> dict[str, Any]:
    """The install that will be lost: its identity on a source and a pool, a chain, a real archive, a stored login,
    a role, workspace settings."""
    identity = await BotIdentity.get(name="default")
    key_path = tmp_path / "old-identity"
    key_path.write_text(identity.private_key.reveal())
    key_path.chmod(0o600)
    Path(f"{key_path}.pub").write_text(identity.public_key + "\n")
    src = make_sshd("escsrc", client_key=key_path)
    pool_host = make_sshd("escpool", client_key=key_path)
    services = WizardServices(pool=SSHPool([await load_private_key()]), directory=DIRECTORY)
    try:
        server = await server_row(src, "web1")
        pool = await StoragePool.create(team_id=TEAM, name="vault-main", server=await server_row(pool_host, "vault"),
                                        base_path=str(pool_host.workdir / "repos"))  # fmt: skip
        www = src.workdir / "www"
        (www / "img").mkdir(parents=True)
        (www / "index.html").write_text("<h1>hello</h1>\n")
        fill(www)
        world = World(src, pool_host, services, server, pool.server, pool, www)
        chain = await make_chain(world, "web1-www")
        run = await backed_up(services, chain.id)
        assert run.status == RunStatus.SUCCEEDED, (run.error_kind, run.error)
        await Workspace.create(team_id=TEAM, name="Acme", settings={"approvals": {"require": True},
                                                                    "ping_urls": {str(chain.id): "https://hc.example/x"}})
        await DatabaseCredential.create(team_id=TEAM, server=server, db_type=DbType.MYSQL, port=3306,
                                        username="backup", password=LOGIN_PASSWORD)  # fmt: skip
        await RoleGrant.create(team_id=TEAM, role=Role.OPERATOR, subject="U2", server=server, paths=["/srv"])
        repository = await Repository.get(id=chain.repository_id)
        return {"src": src, "pool_host": pool_host, "www": www, "archive": run.archive_name, "chain_id": chain.id,
                "public": identity.public_key, "private": identity.private_key.reveal(),
                "passphrase": repository.passphrase.reveal(), "key_export": repository.key_export.reveal(),
                "push_private": repository.client_key_private.reveal()}  # fmt: skip
    finally:
        await services.pool.close()


async def nothing_imported(fresh_public: str) -> None:
    assert await Server.all().count() == 0 and await Repository.all().count() == 0
    assert [i.public_key for i in await BotIdentity.all()] == [fresh_public]


async def restore_with_new_install(old: dict[str, Any], target: Path) -> dict[str, Any]:
    """Only what the new install holds: its database (ids and settings as before), its keyring (the imported
    secrets re-sealed), its imported SSH identity and pinned host keys; the bot's own code opens the repository."""
    repository = await Repository.get(name="web1-www")
    pool = await StoragePool.get(id=repository.pool_id).prefetch_related("server")
    identity = await BotIdentity.get(name="default")
    services = WizardServices(pool=SSHPool([await load_private_key()]), directory=DIRECTORY)
    try:
        transport = pool_transport(pool, services)
        repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
        borg = pool_borg(pool, services)
        listed = [a.name for a in await archives(transport, repo, borg=borg)]
        restored = await restore_paths(transport, repo, old["archive"], str(target), borg=borg)
        exported_now = await borg_key.export(transport, repo, borg=borg)
        again = await backed_up(services, old["chain_id"])  # the chain resumes from the new install
        chain = await BackupChain.get(id=old["chain_id"])
        return {
            "listed": listed, "files": restored.files, "key_export": repository.key_export.reveal(),
            "exported_now": exported_now, "public": identity.public_key, "again": again, "chain_status": chain.status,
            "workspace": (await Workspace.get(team_id=TEAM)).settings,
            "login": (await DatabaseCredential.get(username="backup")).password.reveal(),
            "grant_paths": (await RoleGrant.get(subject="U2")).paths,
            "integrity": (await Repository.get(id=repository.id)).integrity,
            "verified": await VerifiedArchive.filter(repository_id=repository.id).count(),
            "audit": await AuditLog.filter(action="escrow.import").values_list("team_id", flat=True),
            "new_server_id": (await Server.create(team_id=TEAM, name="later", host="192.0.2.7")).id,
        }  # fmt: skip
    finally:
        await services.pool.close()


def test_lost_bot_recovered_from_the_bundle_restores_a_real_archive_with_equal_checksums(
    tmp_path: Path, make_sshd: Any, postgres_db: Any
) -> None:
    old_url, old_keys = install(tmp_path / "old")
    old = asyncio.run(in_db(old_url, old_keys, lambda: old_bot(tmp_path, make_sshd, old_url)))
    bundle = tmp_path / "offline" / "backup-bot.escrow"
    bundle.parent.mkdir()

    # --- export: 0600, no plaintext, never over a file without --force ----------------------------------------
    written = cli(tmp_path / "old", "escrow", "export", "--out", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE)
    assert written.returncode == 0, flat(written)
    assert "1 server(s)" not in flat(written) and "2 server(s) (web1, vault)" in flat(written)
    assert "web1-www" in flat(written) and "1 stored login(s)" in flat(written)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    raw = bundle.read_bytes()
    for secret in (old["passphrase"], LOGIN_PASSWORD, old["private"].splitlines()[1],
                   old["push_private"].splitlines()[1], old["key_export"].splitlines()[1], "web1-www", "vault-main"):
        assert secret.encode() not in raw
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # no temporary file left behind
    again = cli(tmp_path / "old", "escrow", "export", "--out", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE)
    refused(again, "already exists", "--force")
    assert bundle.read_bytes() == raw

    # --- the host is lost: a new install (new data directory, new keys, PostgreSQL) -----------------------------
    new_url, new_keys = install(tmp_path / "new", postgres_db.url)
    assert new_keys != old_keys
    fresh_public = asyncio.run(in_db(new_url, new_keys, lambda: BotIdentity.get(name="default"))).public_key
    wrong = cli(tmp_path / "new", "escrow", "import", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE + "!")
    refused(wrong, "passphrase does not open this bundle", "Nothing was written")
    flipped = bytearray(raw)
    at = raw.index(b'"ciphertext": "') + 40
    flipped[at] = ord("A") if flipped[at] != ord("A") else ord("B")
    damaged = tmp_path / "damaged.escrow"
    damaged.write_bytes(bytes(flipped))
    refused(cli(tmp_path / "new", "escrow", "import", str(damaged), "--passphrase-stdin", stdin=PASSPHRASE),
            "changed or damaged", "use another copy", "Nothing was written")  # fmt: skip
    asyncio.run(in_db(new_url, new_keys, lambda: nothing_imported(fresh_public)))

    checked = cli(tmp_path / "new", "escrow", "check", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE)
    assert checked.returncode == 0 and "opens and holds" in flat(checked), flat(checked)
    asyncio.run(in_db(new_url, new_keys, lambda: nothing_imported(fresh_public)))
    imported = cli(tmp_path / "new", "escrow", "import", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE)
    assert imported.returncode == 0, flat(imported)
    assert "Brought back" in flat(imported) and "web1-www" in flat(imported) and old["public"] in flat(imported)
    refused(cli(tmp_path / "new", "escrow", "import", str(bundle), "--passphrase-stdin", stdin=PASSPHRASE),
            "already holds an inventory", "fresh install")  # fmt: skip

    # --- restore with only what the new install holds ---------------------------------------------------------
    target = old["pool_host"].workdir / "recovered"
    got = asyncio.run(in_db(new_url, new_keys, lambda: restore_with_new_install(old, target)))
    assert got["listed"] == [old["archive"]]
    original = tree(old["www"])
    assert tree(target / str(old["www"]).lstrip("/")) == original
    assert got["files"] == sum(1 for v in original.values() if v[0] == "file")
    assert got["key_export"] == old["key_export"] == got["exported_now"]  # the key export opens it without the pool
    assert got["public"] == old["public"] != fresh_public
    assert got["again"].status == RunStatus.SUCCEEDED, (got["again"].error_kind, got["again"].error)
    assert got["chain_status"] == ChainStatus.ACTIVE and got["integrity"] == Integrity.OK and got["verified"] == 2
    assert got["workspace"]["ping_urls"] == {str(old["chain_id"]): "https://hc.example/x"}  # ids kept
    assert got["login"] == LOGIN_PASSWORD and got["grant_paths"] == ["/srv"]
    assert list(got["audit"]) == [TEAM]
    assert got["new_server_id"] > 2  # the id sequences moved past the imported rows


# --- the envelope and the import without servers --------------------------------------------------------------


def _envelope(passphrase: str = PASSPHRASE, plaintext: bytes = b"{}") -> bytes:
    return escrow.seal(plaintext, passphrase, made_at=datetime.now(UTC))


def test_envelope_tells_a_wrong_passphrase_from_damage_and_authenticates_its_header() -> None:
    sealed = _envelope(plaintext=b"inventory")
    assert escrow.unseal(sealed, PASSPHRASE)[0] == b"inventory"
    with pytest.raises(escrow.WrongPassphrase, match="does not open"):
        escrow.unseal(sealed, "another passphrase entirely")
    envelope = json.loads(sealed)
    cheaper = {**envelope, "kdf": {**envelope["kdf"], "n": 2**14}}
    with pytest.raises(escrow.BundleDamaged, match="changed or damaged"):
        escrow.unseal(json.dumps(cheaper).encode(), PASSPHRASE)
    # Someone lowers the cost and recomputes the unkeyed checksum: GCM still refuses the altered header.
    header = {k: v for k, v in cheaper.items() if k not in ("ciphertext", "sha256")}
    cheaper["sha256"] = escrow._checksum(header, escrow._unb64(cheaper["ciphertext"], "ciphertext"))
    with pytest.raises(escrow.WrongPassphrase):
        escrow.unseal(json.dumps(cheaper).encode(), PASSPHRASE)
    greedy = {**envelope, "kdf": {**envelope["kdf"], "n": 2**24}}
    header = {k: v for k, v in greedy.items() if k not in ("ciphertext", "sha256")}
    greedy["sha256"] = escrow._checksum(header, escrow._unb64(greedy["ciphertext"], "ciphertext"))
    with pytest.raises(escrow.UnsupportedBundle, match="key-derivation settings"):
        escrow.unseal(json.dumps(greedy).encode(), PASSPHRASE)
    with pytest.raises(escrow.UnsupportedBundle, match="version"):
        escrow.unseal(json.dumps({**envelope, "version": 2}).encode(), PASSPHRASE)
    with pytest.raises(escrow.NotABundle):
        escrow.unseal(b"not json at all", PASSPHRASE)


async def _seed() -> None:
    ws = await Workspace.create(team_id=TEAM, settings={"approvals": {"require": False}})
    await BotIdentity.create(name="default", key_type="ssh-ed25519", public_key="ssh-ed25519 AAAAold bot",
                             private_key=Secret.seal("fernet:starts-like-a-token"))  # fmt: skip
    server = await Server.create(team_id=TEAM, name="db1", host="192.0.2.1", host_key="ssh-ed25519 AAAAhost")
    pool = await StoragePool.create(team_id=TEAM, name="p", server=server, base_path="/srv/borg")
    repository = await Repository.create(team_id=TEAM, pool=pool, name="r", path="/srv/borg/r", passphrase="pp")
    first = await BackupChain.create(team_id=TEAM, name="first", repository=repository, status=ChainStatus.ACTIVE)
    await BackupChain.create(team_id=TEAM, name="second", repository=repository, depends_on=first,
                             status=ChainStatus.ACTIVE)  # fmt: skip
    await DatabaseCredential.create(team_id=TEAM, server=server, db_type=DbType.POSTGRESQL, port=5432,
                                    username="u", password=LOGIN_PASSWORD)  # fmt: skip
    assert ws.id


def _comparable(inventory: escrow.Inventory) -> dict[str, list[dict[str, Any]]]:
    """The rows without what an import changes by design (update stamps, chains paused, the identity's new id)."""
    skip = {"updated_at", "status"}
    tables = {table: [{k: v for k, v in row.items() if k not in skip} for row in rows]
              for table, rows in inventory.tables.items()}  # fmt: skip
    for row in tables["bot_identity"] + tables["workspace"]:
        row.pop("id")
    return tables


@pytest.mark.storage
async def test_inventory_round_trip_on_each_engine_keeps_ids_and_secrets_and_refuses_an_occupied_database(
    engine_url: str, tmp_path: Path
) -> None:
    source_url = f"sqlite://{tmp_path / 'source.sqlite3'}"
    install_keyring(Keyring([generate_key()]))
    try:
        async with db.database(source_url):
            await _seed()
            without = await escrow.dump_inventory(with_logins=False, secret_keys=["k"], made_at=datetime.now(UTC))
            inventory = await escrow.dump_inventory(with_logins=True, secret_keys=["k"], made_at=datetime.now(UTC))
    finally:
        install_keyring(None)
    assert "database_credentials" not in without.tables
    sealed = escrow.seal(inventory.to_bytes(), PASSPHRASE, made_at=inventory.made_at)
    opened = escrow.Inventory.from_bytes(escrow.unseal(sealed, PASSPHRASE)[0])

    install_keyring(Keyring([generate_key()]))
    try:
        async with db.database(engine_url):
            actor = escrow_service.host_operator()
            report = await escrow_service.import_bundle(actor, sealed, SecretStr(PASSPHRASE), pause_chains=True)
            assert report.paused == 2 and [w.team_id for w in report.workspaces] == [TEAM]
            back = await escrow.dump_inventory(with_logins=True, secret_keys=["k"], made_at=datetime.now(UTC))
            assert _comparable(back) == _comparable(inventory)  # every column of every row came back as it was
            assert opened.rows(BackupChain)[1]["depends_on_id"] == opened.rows(BackupChain)[0]["id"]
            second = await BackupChain.get(name="second")
            assert second.depends_on_id == (await BackupChain.get(name="first")).id
            assert second.status == ChainStatus.PAUSED
            assert (await Repository.get(name="r")).passphrase.reveal() == "pp"
            assert (await BotIdentity.get(name="default")).private_key.reveal() == "fernet:starts-like-a-token"
            assert (await DatabaseCredential.get(username="u")).password.reveal() == LOGIN_PASSWORD
            assert (await Server.create(team_id=TEAM, name="db2", host="192.0.2.2")).id == 2
            with pytest.raises(Refused, match="already holds an inventory"):
                await escrow_service.import_bundle(actor, sealed, SecretStr(PASSPHRASE))
            with pytest.raises(Refused, match="bot host's shell"):
                await escrow_service.check_fresh(Actor(team_id=TEAM, user_id="U1", is_admin=True))
    finally:
        install_keyring(None)


def test_export_refuses_a_short_passphrase_a_passphrase_argument_and_a_missing_terminal(tmp_path: Path) -> None:
    install(tmp_path / "bot")
    where = tmp_path / "bot"
    out = tmp_path / "b.escrow"
    refused(cli(where, "escrow", "export", "--out", str(out), "--passphrase-stdin", stdin="too short\n"),
            "at least 15 characters", "Nothing was written")  # fmt: skip
    refused(cli(where, "escrow", "export", "--out", str(out), "--passphrase", PASSPHRASE),
            "never given on the command line")  # fmt: skip
    refused(cli(where, "escrow", "export", "--out", str(out)), "No terminal", "--passphrase-stdin")
    refused(cli(where, "escrow", "export", "--out", str(tmp_path / "nowhere" / "b"), "--passphrase-stdin",
                stdin=PASSPHRASE), "does not exist")  # fmt: skip
    assert not out.exists()
    assert PASSPHRASE not in flat(cli(where, "escrow", "export", "--out", str(out), "--passphrase", PASSPHRASE))
    first = cli(where, "escrow", "export", "--out", str(out), "--passphrase-stdin", stdin=PASSPHRASE)
    assert first.returncode == 0 and "no workspace" in flat(first), flat(first)
    before = out.read_bytes()
    out.chmod(0o644)
    forced = cli(where, "escrow", "export", "--out", str(out), "--force", "--passphrase-stdin", stdin=PASSPHRASE)
    assert forced.returncode == 0, flat(forced)
    assert out.read_bytes() != before and stat.S_IMODE(out.stat().st_mode) == 0o600  # a new salt, owner-only
    refused(cli(where, "escrow", "check", str(out), "--passphrase-stdin", stdin="not the passphrase at all"),
            "does not open")  # fmt: skip
