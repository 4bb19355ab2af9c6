"""When the bot itself is lost: the recovery bundle, written and read back.

Every repository's passphrase and key export, every push key and the bot's SSH identity live only in the bot's
database, encrypted with the keys in its settings file: lose that host and every backup is unreadable. The bundle
is that inventory sealed under a recovery passphrase the admin chooses (:mod:`storage.escrow`: scrypt +
AES-256-GCM), kept offline; ``backup-bot escrow import`` on a fresh install writes it back under the new install's
keys, and the chains resume.

Who: only the person at the bot host's shell (:func:`host_operator`). The bundle holds every workspace's secrets and
the key that reaches every server, so no workspace role (not even a workspace's admin in Slack) is enough; the shell
already holds the settings keys and the database. Each export and import is audited in every workspace it covers.
The file is written owner-only (0600), never over an existing one unless asked, and only ever as ciphertext.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.access import Actor, Forbidden, Refused
from bot.access.audit import record
from storage import escrow, models
from storage.escrow import EscrowError, Inventory

MIN_PASSPHRASE = 15
MAX_PASSPHRASE = 1024
PASSPHRASE_RULE = (f"A recovery passphrase needs at least {MIN_PASSPHRASE} characters: it alone guards every "
                   "repository's key once the bundle leaves this host, so choose four or more random words and "
                   "write them down where the bundle is not kept.")  # fmt: skip


def host_operator(name: str = "cli") -> Actor:
    """The person at the bot host's shell, acting for the whole installation (no one workspace: ``team_id`` is
    empty, so this actor reaches no tenant's rows by itself; audit rows name each workspace explicitly)."""
    return Actor(team_id="", user_id=name[:32], is_admin=True, via="cli")


def _require_host(actor: Actor) -> None:
    if actor.via != "cli" or not actor.is_admin:
        raise Forbidden("Only the person at the bot host's shell can write or read the recovery bundle (it holds "
                        "every workspace's secrets and the bot's SSH key): run `backup-bot escrow` there.")


def check_passphrase(passphrase: SecretStr) -> None:
    """Refuse a recovery passphrase that is too short (or absurdly long), in one sentence."""
    value = passphrase.get_secret_value()
    if len(value) > MAX_PASSPHRASE:
        raise Refused(f"A recovery passphrase of more than {MAX_PASSPHRASE} characters is refused; choose a shorter "
                      "one.")  # fmt: skip
    if len(value.strip()) < MIN_PASSPHRASE:
        raise Refused(PASSPHRASE_RULE)


# --- what a bundle holds, for people --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceContents:
    """One workspace's part of a bundle, by name (never a secret)."""

    team_id: str
    servers: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    logins: int = 0
    templates: int = 0
    roles: int = 0

    def counts(self) -> dict[str, int]:
        return {"servers": len(self.servers), "pools": len(self.pools), "repositories": len(self.repositories),
                "chains": len(self.chains), "logins": self.logins, "templates": self.templates,
                "roles": self.roles}  # fmt: skip


@dataclass(frozen=True)
class Contents:
    """What a bundle brings back: when it was made, the bot's public key, each workspace's part."""

    made_at: datetime
    identity: str | None  # the bot's SSH public key line
    with_logins: bool
    workspaces: list[WorkspaceContents]
    paused: int = 0  # chains set to paused by the import


def _names(inventory: Inventory, model: type, team: str) -> list[str]:
    return [str(r["name"]) for r in inventory.rows(model) if r.get("team_id") == team]


def _count(inventory: Inventory, model: type, team: str) -> int:
    return sum(1 for r in inventory.rows(model) if r.get("team_id") == team)


def contents(inventory: Inventory) -> Contents:
    """Given an inventory, return what it holds by name and count."""
    parts = [WorkspaceContents(team_id=team, servers=_names(inventory, models.Server, team),
                               pools=_names(inventory, models.StoragePool, team),
                               repositories=_names(inventory, models.Repository, team),
                               chains=_names(inventory, models.BackupChain, team),
                               logins=_count(inventory, models.DatabaseCredential, team),
                               templates=_count(inventory, models.BackupTemplate, team),
                               roles=_count(inventory, models.RoleGrant, team))
             for team in inventory.team_ids()]  # fmt: skip
    identities = inventory.rows(models.BotIdentity)
    identity = str(identities[0]["public_key"]) if identities else None
    return Contents(made_at=inventory.made_at, identity=identity, with_logins=inventory.with_logins, workspaces=parts)


async def _audit(actor: Actor, action: str, found: Contents, **details: Any) -> None:
    """One audit row per workspace the bundle covers (the host operator acts for all of them)."""
    for part in found.workspaces:
        await record(replace(actor, team_id=part.team_id), action, "installation", None,
                     made_at=found.made_at.isoformat(), counts=part.counts(), **details)  # fmt: skip


# --- export ------------------------------------------------------------------------------------------------------


def check_target(path: Path, *, force: bool) -> None:
    """Refuse, before anything is asked or read, a target that exists (without ``force``), is a directory, or sits
    in a directory that does not exist."""
    if path.is_dir():
        raise Refused(f"{path} is a directory: give the bundle's file name, e.g. {path / 'backup-bot.escrow'}.")
    if not path.parent.is_dir():
        raise Refused(f"The directory {path.parent} does not exist: create it or choose another place for the bundle.")
    if path.exists() and not force:
        raise Refused(f"{path} already exists; nothing was written. Choose another file name, or add --force to "
                      "replace it (the old bundle then no longer exists).")  # fmt: skip


def write_bundle(path: Path, data: bytes, *, force: bool) -> str:
    """Write the (already sealed) bundle owner-only: to a temporary file beside ``path`` created 0600, flushed to
    disk, then linked into place — which fails rather than replace a file that appeared meanwhile — or, with
    ``force``, renamed over it. Returns the file's absolute path."""
    check_target(path, force=force)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise Refused(f"{path} appeared while the bundle was being written; nothing was written over it. "
                              "Choose another file name.") from None  # fmt: skip
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    os.chmod(path, 0o600)
    return str(path.resolve())


async def export_bundle(actor: Actor, path: Path, passphrase: SecretStr, *, secret_keys: list[str],
                        with_logins: bool = True, force: bool = False) -> Contents:  # fmt: skip
    """Given the host operator, a target file and a recovery passphrase, seal the whole inventory into ``path`` and
    return what it holds. The plaintext exists only in memory; a refusal writes nothing."""
    _require_host(actor)
    check_passphrase(passphrase)
    check_target(path, force=force)
    made_at = datetime.now(UTC)
    inventory = await escrow.dump_inventory(with_logins=with_logins, secret_keys=secret_keys, made_at=made_at)
    sealed = escrow.seal(inventory.to_bytes(), passphrase.get_secret_value(), made_at=made_at)
    written = write_bundle(path, sealed, force=force)
    found = contents(inventory)
    await _audit(actor, "escrow.export", found, file=written, with_logins=with_logins)
    return found


# --- import ------------------------------------------------------------------------------------------------------


async def check_fresh(actor: Actor) -> None:
    """Refuse (before the passphrase is asked) a database that already holds an inventory of its own."""
    _require_host(actor)
    taken = await escrow.occupied()
    if taken:
        listed = ", ".join(f"{n} {table}" for table, n in taken.items())
        raise Refused(f"This database already holds an inventory ({listed}): import the bundle into a fresh install "
                      "(`backup-bot init` with a new data directory and database). Nothing was written.")


def read_bundle(path: Path) -> bytes:
    """The bundle's bytes (bounded), or one sentence naming the file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(escrow.MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise Refused(f"Cannot read {path}: {exc.strerror or type(exc).__name__}.") from None


def open_bundle(actor: Actor, data: bytes, passphrase: SecretStr) -> Inventory:
    """Given a bundle's bytes and its passphrase, return its inventory, or one sentence (wrong passphrase, damaged
    file, not a bundle, a version this bot does not read)."""
    _require_host(actor)
    try:
        plaintext, _ = escrow.unseal(data, passphrase.get_secret_value())
        return Inventory.from_bytes(plaintext)
    except EscrowError as exc:
        raise Refused(str(exc)) from None


async def import_bundle(actor: Actor, data: bytes, passphrase: SecretStr, *, pause_chains: bool = False,
                        source: str = "") -> Contents:  # fmt: skip
    """Given the host operator and a bundle, write its inventory into this fresh install in one transaction (under
    this install's keys) and return what came back; a refusal writes nothing."""
    inventory = open_bundle(actor, data, passphrase)
    try:
        report = await escrow.load_inventory(inventory, pause_chains=pause_chains)
    except EscrowError as exc:
        raise Refused(str(exc)) from None
    found = replace(contents(inventory), paused=report.paused)
    await _audit(actor, "escrow.import", found, file=source, paused=report.paused)
    return found
