"""The shape of a wizard session's answers, as a typed model: :class:`SessionData` (JSON in the session row).

Every save checks the session against it (:func:`checked`), so an answer of the wrong type, or a key nobody
declared, fails at once and loudly instead of surfacing three steps later; code that reads answers uses
:meth:`SessionData.of` for typed values. Keys starting with ``_`` are the wizard's own scratch values (timezone,
the done screen's text, cached probe results). Secrets never go in here as plaintext: a passphrase typed in the
wizard is sealed first (``storage.crypto.Secret.seal(...).token``) and stored under a ``*_token`` key; new database
logins are stored as DatabaseCredential rows at once and referenced by id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

SNAPSHOT_TYPES = ("files", "system", "mysql", "postgresql", "docker")  # a MongoDB dump has no snapshot step
DATABASE_TYPES = ("mysql", "postgresql", "mongodb")
BackupKind = Literal["files", "mysql", "postgresql", "mongodb", "docker", "system"]


class _Part(BaseModel):
    """A nested answer: its known fields are typed; values other code adds next to them are kept."""

    model_config = ConfigDict(extra="allow")


class PendingServer(_Part):
    """Step 1: a host whose key was read and waits for an admin's confirmation."""

    host: str
    port: int
    username: str
    name: str
    key_line: str
    fingerprint: str


class RepositoryAnswer(_Part):
    """Step 6: a new repository, or an existing one opened with its (sealed) passphrase."""

    mode: Literal["new", "existing"] = "new"
    name: str | None = None
    encryption: str | None = None
    compression: str | None = None
    passphrase_token: str | None = None


class SnapshotAnswer(_Part):
    method: str = "none"  # none, btrfs, lvm, zfs


class ScheduleAnswer(_Part):
    """Step 8, as ``bot.backup.schedule.normalized`` stores it."""

    days: list[str] = []
    at: str | None = None
    window: list[str] | None = None
    timezone: str | None = None
    priority: int | None = None


class ValidationResult(_Part):
    """Step 9's outcome: each check with the step to go back to, for the answers with ``fingerprint``."""

    ok: bool
    steps: list[dict[str, Any]] = []
    at: str | None = None
    fingerprint: str | None = None
    next_runs: list[str] | None = None
    deferred: bool = False  # checked before approval only: nothing on a server yet


class EditAnswer(_Part):
    """An edit of an existing chain (``/backup edit``): which chain, and its settings when the wizard was opened
    (:func:`bot.services.editing.settings_of`), so the review shows the difference and applying notices a change
    made by someone else meanwhile."""

    chain_id: int
    chain_name: str
    repository_id: int
    before: dict[str, Any]
    has_archives: bool = False


class NotifyAnswer(_Part):
    """Where a chain's reports go (a channel id, None: nowhere) and whether successes are told too."""

    channel: str | None = None
    success: bool = True


class SessionData(BaseModel):
    """Every answer a wizard session may hold; all optional until their step is passed."""

    model_config = ConfigDict(extra="allow")

    server_id: int | None = None  # step 1: a Server of this workspace with a confirmed host key
    pending_server: PendingServer | None = None
    backup_type: BackupKind | None = None  # step 2
    source: dict[str, Any] | None = None  # step 3: the type's SourceConfig as a dict (bot.backup.sources)
    credential_id: int | None = None  # step 3: the DatabaseCredential used (None: socket or peer login)
    atomicity: dict[str, Any] | None = None  # step 3: {atomic, method, reason} shown to the user
    size_estimate: dict[str, Any] | None = None  # step 3: what du (or the database) measured
    snapshot: SnapshotAnswer | None = None  # step 4
    pool_id: int | None = None  # step 5
    repository: RepositoryAnswer | None = None  # step 6
    retention: dict[str, int | str] | None = None  # step 7: preset + bot.backup.retention.Policy fields
    schedule: ScheduleAnswer | None = None  # step 8
    validation: ValidationResult | None = None  # step 9
    setup: dict[str, Any] | None = None  # step 9: the repository made on the pool (secrets sealed)
    chain_name: str | None = None  # step 10
    template_id: int | None = None  # prefilled from a template (`/backup new from:<name>`)
    approval_id: int | None = None  # step 10: these answers wait for (or got) this approval
    chain_id: int | None = None  # step 10: the chain created
    edit: EditAnswer | None = None  # `/backup edit`: the session changes this chain instead of creating one
    notify: NotifyAnswer | None = None  # edit mode: the chain's report channel and success notices

    @model_validator(mode="before")
    @classmethod
    def _declared(cls, value: Any) -> Any:
        """Only declared keys, or the wizard's own ``_…`` scratch keys: a typo must not be stored silently."""
        if isinstance(value, Mapping):
            unknown = sorted(k for k in value if not str(k).startswith("_") and k not in cls.model_fields)
            if unknown:
                raise ValueError(f"undeclared session keys: {', '.join(unknown)}")
        return value

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> SessionData:
        """The typed view of a session's answers (raises :class:`InvalidSession`)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSession(exc) from None


class InvalidSession(ValueError):
    """A session's answers do not have the declared shape: a bug in a step, or a row changed behind the bot."""

    def __init__(self, error: ValidationError) -> None:
        places = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in error.errors()[:5])
        super().__init__(f"The wizard's answers do not have the expected shape ({places}).")


def checked(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Given a session's answers, return them unchanged once they have the declared shape (else InvalidSession)."""
    SessionData.of(data)
    return data


CHECKED_KEYS = ("server_id", "backup_type", "source", "credential_id", "snapshot", "pool_id", "repository", "retention",
                "schedule")  # fmt: skip
"""The answers validation checks: a change to any of them means validating again."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(data: Mapping[str, Any]) -> str:
    """Given a session's answers, return a digest of those validation checks (a change means validating again)."""
    return _digest({k: data.get(k) for k in CHECKED_KEYS})


def approval_fingerprint(data: Mapping[str, Any]) -> str:
    """Given a session's answers, return the digest an approval holds them to: what validation checks, and for an
    edit also the chain's name and report settings (an approver approved exactly those). A new chain's approval is
    the validation fingerprint itself."""
    if not data.get("edit"):
        return fingerprint(data)
    return _digest({"checked": fingerprint(data), "notify": data.get("notify"), "name": data.get("chain_name"),
                    "chain": (data.get("edit") or {}).get("chain_id")})  # fmt: skip
