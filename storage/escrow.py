"""The recovery bundle's two halves that need no bot: the sealed envelope, and the inventory rows in and out.

Why at the storage level: the bundle is rows of the data model (with their secrets in plain text) sealed under a
passphrase; nothing in it knows Slack, SSH or borg. The service (:mod:`bot.services.escrow`) checks who asks, writes
the file and audits; code that may not import the service layer (a future built-in chain that backs up the bot's own
database, in ``bot.runs`` / ``bot.backup``) can seal and open bundles through this module.

**Envelope** (one UTF-8 JSON object, a file of its own)::

    {"format": "backup-wizard-recovery-bundle", "version": 1, "made_at": "…",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<b64>"},
     "cipher": {"name": "AES-256-GCM", "nonce": "<b64>"},
     "ciphertext": "<b64>", "sha256": "<hex>"}

The key is scrypt(passphrase, salt) with 128 MiB of memory (OWASP's N=2^17, r=8, p=1); AES-256-GCM authenticates
the ciphertext *and* the header (every field but ``ciphertext`` and ``sha256``, canonical JSON, as associated data),
so nobody can lower the KDF's cost or change the version unnoticed. ``sha256`` (unkeyed, over the header and the
ciphertext) only tells an accident from a wrong passphrase: a damaged file fails it before any key is derived, and
a file that passes it but not GCM was opened with the wrong passphrase. A header asking for a KDF cost outside
sane bounds is refused before scrypt runs (a crafted file cannot make the bot allocate gigabytes).

**Inventory** (the plaintext, never on disk): the rows of the tables that describe what the bot backs up, every
column, encrypted columns in plain text (re-sealed under the importing install's keys on the way in), primary keys
kept — a fresh install gets the same ids, so what refers to them outside these rows (ping URLs in a workspace's
settings, buttons of old Slack messages) keeps working. Run history, audit log, wizard sessions, approvals, the
outbox, replay records and API tokens are not carried: they describe the lost host's past, and a recovered bot must
not honour credentials issued by a host that may have been compromised (API tokens are issued again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import pkgutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tortoise.fields import DatetimeField
from tortoise.models import Model
from tortoise.transactions import in_transaction

from storage import migrations, models
from storage.crypto import Secret
from storage.errors import StorageError
from storage.fields import EncryptedTextField

FORMAT = "backup-wizard-recovery-bundle"
VERSION = 1
PAYLOAD_VERSION = 1
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # a bundle of thousands of chains is a few MiB; anything larger is not one
CHAIN_SOURCES = "backup_chain_source"

# Restored in this order (each row's references come earlier); ``depends_on_id`` is set in a second pass.
INVENTORY: tuple[type[Model], ...] = (
    models.Workspace,
    models.BotIdentity,
    models.Server,
    models.DatabaseCredential,
    models.StoragePool,
    models.Repository,
    models.BackupSource,
    models.BackupTemplate,
    models.BackupChain,
    models.RoleGrant,
    models.VerifiedArchive,
)
# What makes a database "occupied": any row here means it already has an inventory of its own.
OCCUPYING: tuple[type[Model], ...] = INVENTORY[2:-1]


class EscrowError(StorageError):
    """A bundle cannot be written or read; the message is one sentence saying why and what to do."""


class NotABundle(EscrowError):
    pass


class BundleDamaged(EscrowError):
    pass


class WrongPassphrase(EscrowError):
    pass


class UnsupportedBundle(EscrowError):
    pass


# --- envelope ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """scrypt's cost (``n`` a power of two) and salt; the defaults are OWASP's recommendation for scrypt."""

    salt: bytes = field(default_factory=lambda: os.urandom(16), repr=False)
    n: int = 2**17
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """Refuse costs outside what this bot writes or could reasonably read (a crafted header must not make it
        allocate gigabytes or derive a key in microseconds)."""
        power_of_two = self.n > 1 and self.n & (self.n - 1) == 0
        if not (power_of_two and 2**14 <= self.n <= 2**20 and 8 <= self.r <= 16 and 1 <= self.p <= 4
                and 16 <= len(self.salt) <= 64):  # fmt: skip
            raise UnsupportedBundle("The bundle asks for key-derivation settings this bot does not use (scrypt n "
                                    f"{self.n}, r {self.r}, p {self.p}); it was not written by `backup-bot escrow "
                                    "export`.")  # fmt: skip

    def derive(self, passphrase: str) -> bytes:
        scrypt = Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p)
        return scrypt.derive(passphrase.encode("utf-8"))

    def header(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": _b64(self.salt)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BundleDamaged(f"The bundle's {what} is not valid base64: the file was changed or damaged since it "
                            "was written; use another copy.") from None  # fmt: skip


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _checksum(header: dict[str, Any], ciphertext: bytes) -> str:
    return hashlib.sha256(_canonical(header) + b"\n" + ciphertext).hexdigest()


def seal(plaintext: bytes, passphrase: str, *, made_at: datetime, kdf: KdfParams | None = None) -> bytes:
    """Given the inventory's bytes and a passphrase, return the envelope's bytes (see the module docstring)."""
    kdf = kdf or KdfParams()
    kdf.check()
    nonce = os.urandom(12)
    header = {"format": FORMAT, "version": VERSION, "made_at": made_at.astimezone(UTC).isoformat(),
              "kdf": kdf.header(), "cipher": {"name": "AES-256-GCM", "nonce": _b64(nonce)}}  # fmt: skip
    ciphertext = AESGCM(kdf.derive(passphrase)).encrypt(nonce, plaintext, _canonical(header))
    envelope = {**header, "ciphertext": _b64(ciphertext), "sha256": _checksum(header, ciphertext)}
    return (json.dumps(envelope, indent=1) + "\n").encode("ascii")


def _parse(data: bytes) -> dict[str, Any]:
    """The envelope as a dict, or one sentence saying the file is not one (or not one this version reads)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise NotABundle(f"The file is larger than {MAX_BUNDLE_BYTES // 2**20} MiB: it is not a recovery bundle.")
    try:
        envelope = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotABundle("The file is not a recovery bundle (not the JSON `backup-bot escrow export` writes), or it "
                         "was damaged beyond reading; use another copy.") from None  # fmt: skip
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise NotABundle("The file is not a recovery bundle of the Backup Wizard bot (its format field is missing "
                         "or different).")  # fmt: skip
    if envelope.get("version") != VERSION:
        raise UnsupportedBundle(f"The bundle is format version {envelope.get('version')!r}; this bot reads "
                                f"version {VERSION}. Import it with the bot version that wrote it, or a newer one.")
    return envelope


def unseal(data: bytes, passphrase: str) -> tuple[bytes, datetime]:
    """Given an envelope's bytes and a passphrase, return the plaintext and when it was made, or raise one of
    :class:`NotABundle`, :class:`UnsupportedBundle`, :class:`BundleDamaged`, :class:`WrongPassphrase`."""
    envelope = _parse(data)
    header = {k: v for k, v in envelope.items() if k not in ("ciphertext", "sha256")}
    ciphertext = _unb64(envelope.get("ciphertext", ""), "ciphertext")
    if envelope.get("sha256") != _checksum(header, ciphertext):
        raise BundleDamaged("The bundle's checksum does not match its contents: the file was changed or damaged "
                            "since it was written; use another copy.")  # fmt: skip
    try:
        kdf_header, cipher = dict(envelope["kdf"]), dict(envelope["cipher"])
        kdf = KdfParams(salt=_unb64(kdf_header["salt"], "salt"), n=int(kdf_header["n"]), r=int(kdf_header["r"]),
                        p=int(kdf_header["p"]))  # fmt: skip
        nonce = _unb64(cipher["nonce"], "nonce")
        made_at = datetime.fromisoformat(str(envelope["made_at"]))
    except (KeyError, TypeError, ValueError):
        raise NotABundle("The bundle's header is incomplete: it was not written by `backup-bot escrow "
                         "export`.") from None
    if kdf_header.get("name") != "scrypt" or cipher.get("name") != "AES-256-GCM" or len(nonce) != 12:
        raise UnsupportedBundle("The bundle uses a key derivation or cipher this bot does not (it writes scrypt and "
                                "AES-256-GCM).")  # fmt: skip
    kdf.check()
    try:
        return AESGCM(kdf.derive(passphrase)).decrypt(nonce, ciphertext, _canonical(header)), made_at
    except InvalidTag:
        raise WrongPassphrase("The recovery passphrase does not open this bundle (the file itself is intact): "
                              "check the passphrase, as written down when the bundle was made.") from None  # fmt: skip


# --- inventory --------------------------------------------------------------------------------------------------


class Inventory(BaseModel):
    """The bundle's plaintext: every inventory row as ``{column: value}`` per table, secrets in plain text."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    payload_version: Literal[1] = PAYLOAD_VERSION
    made_at: datetime
    schema_name: str = Field(alias="schema")  # the newest migration of the install that wrote it
    with_logins: bool
    secret_keys: list[str] = Field(default_factory=list)  # the settings keys (to read a backup of the bot's own DB)
    tables: dict[str, list[dict[str, Any]]]
    chain_sources: list[tuple[int, int]] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Inventory:
        """Given decrypted bytes, the inventory, or one sentence when they do not describe one this bot reads."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise UnsupportedBundle(f"The bundle opened, but its contents are not an inventory this bot reads "
                                    f"({where}: {first.get('msg')}); import it with the bot version that wrote "
                                    "it.") from None

    def rows(self, model: type[Model]) -> list[dict[str, Any]]:
        return self.tables.get(model._meta.db_table, [])

    def team_ids(self) -> list[str]:
        """Every workspace the rows belong to (a workspace may have servers before it has a Workspace row)."""
        return sorted({str(r["team_id"]) for rows in self.tables.values() for r in rows if r.get("team_id")})


def newest_migration() -> str:
    """The name of this install's newest schema migration (bundles name the schema they were taken from)."""
    return max(m.name for m in pkgutil.iter_modules(migrations.__path__) if m.name[:4].isdigit())


def known_migrations() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(migrations.__path__) if m.name[:4].isdigit()}


def columns(model: type[Model]) -> list[str]:
    """A model's stored fields by name (foreign keys as their ``…_id`` source fields)."""
    return list(model._meta.fields_db_projection)


def _encode(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


async def _rows(model: type[Model]) -> list[dict[str, Any]]:
    names = columns(model)
    return [{name: _encode(getattr(row, name)) for name in names} for row in await model.all().order_by("id")]


async def dump_inventory(*, with_logins: bool, secret_keys: list[str], made_at: datetime) -> Inventory:
    """Given whether to carry stored database logins, return the inventory of this database (secrets decrypted
    with the installed keyring: a missing key fails here, before anything is written)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    async with in_transaction() as connection:  # one snapshot: a bot running meanwhile cannot tear references
        if connection.capabilities.dialect == "postgres":  # SQLite is serializable, InnoDB repeatable read already
            await connection.execute_script("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for model in INVENTORY:
            if model is models.DatabaseCredential and not with_logins:
                continue
            tables[model._meta.db_table] = await _rows(model)
        pairs = await _chain_sources()
    if not with_logins:  # sources keep their settings; their login is typed again after the import
        for row in tables[models.BackupSource._meta.db_table]:
            row["credential_id"] = None
    for row in tables[models.VerifiedArchive._meta.db_table]:
        row["run_id"] = None  # runs are not carried
    return Inventory(made_at=made_at, schema=newest_migration(), with_logins=with_logins, secret_keys=secret_keys,
                     tables=tables, chain_sources=pairs)  # fmt: skip


async def _chain_sources() -> list[tuple[int, int]]:
    pairs = await models.BackupChain.all().order_by("id").values_list("id", "sources__id")
    return [(int(chain), int(source)) for chain, source in pairs if source is not None]


@dataclass(frozen=True)
class LoadReport:
    """What an import wrote: rows per table, the workspaces, and the chains it set to paused."""

    rows: dict[str, int]
    team_ids: list[str]
    paused: int


async def occupied() -> dict[str, int]:
    """Given the connected database, return the inventory tables that already hold rows (name → count)."""
    counts = {model._meta.db_table: await model.all().count() for model in OCCUPYING}
    return {name: n for name, n in counts.items() if n}


def _decode(model: type[Model], row: dict[str, Any]) -> dict[str, Any]:
    """A bundle row as keyword arguments for ``model``: secrets sealed under this install's keys (never handed to
    the field as text, which would read a passphrase starting with "fernet:" as ciphertext), times parsed."""
    known = model._meta.fields_map
    unknown = sorted(set(row) - set(columns(model)))
    if unknown:
        raise UnsupportedBundle(f"The bundle's {model._meta.db_table} rows have columns this bot does not know "
                                f"({', '.join(unknown[:5])}): it was written by a newer version; upgrade this install "
                                "first.")  # fmt: skip
    values: dict[str, Any] = {}
    for name, value in row.items():
        kind = known[name]
        if value is not None and isinstance(kind, EncryptedTextField):
            value = Secret.seal(str(value))
        elif value is not None and isinstance(kind, DatetimeField):
            value = datetime.fromisoformat(str(value))
        values[name] = value
    return values


async def _insert(model: type[Model], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        values = _decode(model, row)
        if model is models.BackupChain:
            values["depends_on_id"] = None  # the chain it waits for may come later; set in a second pass
        await model.create(**values)


async def _replace_singletons(inventory: Inventory) -> None:
    """Workspace rows are matched by team id (a fresh install may have met its workspace already) and the bot's
    identity replaces the one ``init`` generated, which no server trusts yet."""
    for row in inventory.rows(models.Workspace):
        values = _decode(models.Workspace, row)
        for stamp in ("id", "updated_at"):
            values.pop(stamp, None)
        existing = await models.Workspace.get_or_none(team_id=values["team_id"])
        if existing is None:
            await models.Workspace.create(**values)
        else:
            await models.Workspace.filter(id=existing.id).update(**values)
    identities = inventory.rows(models.BotIdentity)
    if identities:
        await models.BotIdentity.all().delete()
        for row in identities:
            await models.BotIdentity.create(**{k: v for k, v in _decode(models.BotIdentity, row).items() if k != "id"})


async def _reset_sequences(connection: Any) -> None:
    """PostgreSQL's id sequences do not follow explicit ids (SQLite and MariaDB do): move them past the highest."""
    if connection.capabilities.dialect != "postgres":
        return
    for model in INVENTORY[2:]:
        table = model._meta.db_table
        await connection.execute_query(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, "
            "false)"
        )


async def load_inventory(inventory: Inventory, *, pause_chains: bool = False) -> LoadReport:
    """Given an inventory and a connected database with no inventory of its own, write every row in one transaction
    (ids kept, secrets re-sealed under the installed keyring) and return what was written. Any failure writes
    nothing."""
    if inventory.schema_name not in known_migrations():
        raise UnsupportedBundle(f"The bundle was taken from a newer schema ({inventory.schema_name}) than this "
                                f"install knows ({newest_migration()}): upgrade this install first.")  # fmt: skip
    async with in_transaction() as connection:
        taken = await occupied()
        if taken:
            raise EscrowError("This database already holds an inventory (" + ", ".join(f"{n} {t}" for t, n in
                              taken.items()) + "): import into a fresh install (`backup-bot init` with a new data "
                              "directory and database). Nothing was written.")  # fmt: skip
        await _replace_singletons(inventory)
        for model in INVENTORY[2:]:
            await _insert(model, inventory.rows(model))
        for row in inventory.rows(models.BackupChain):
            if row.get("depends_on_id") is not None:
                await models.BackupChain.filter(id=row["id"]).update(depends_on_id=row["depends_on_id"])
        await _link_sources(inventory.chain_sources)
        paused = 0
        if pause_chains:
            paused = await models.BackupChain.filter(status=models.ChainStatus.ACTIVE).update(
                status=models.ChainStatus.PAUSED)
        await _reset_sequences(connection)
    rows = {model._meta.db_table: len(inventory.rows(model)) for model in INVENTORY}
    return LoadReport(rows=rows, team_ids=inventory.team_ids(), paused=paused)


async def _link_sources(pairs: list[tuple[int, int]]) -> None:
    by_chain: dict[int, list[int]] = {}
    for chain_id, source_id in pairs:
        by_chain.setdefault(chain_id, []).append(source_id)
    for chain_id, source_ids in by_chain.items():
        chain = await models.BackupChain.get(id=chain_id)
        await chain.sources.add(*await models.BackupSource.filter(id__in=source_ids))
