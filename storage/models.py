"""The data model of the Backup Wizard.

Model docstrings become table comments in the migrations: keep semicolons out of them (the SQLite
schema editor splits statements on them).

Every row that belongs to a Slack workspace carries ``team_id`` and is reached through
:mod:`storage.tenancy`, which refuses queries that do not name the workspace. Secrets are
:class:`~storage.fields.EncryptedTextField` columns. Enumerations are stored as short strings so the
schema is the same on SQLite, PostgreSQL and MariaDB.

The seed's tables (Repository "enhanced", backup_templates, database_credentials) are followed column for
column, with two deliberate changes: DatabaseCredential's ``UNIQUE (server_id, db_type, is_default)`` would
allow only one *non*-default credential per type, so "one default per server and type" is enforced in
:meth:`DatabaseCredential.make_default` instead; and every table gets ``team_id``.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from storage.fields import EncryptedTextField


class BackupType(StrEnum):
    FILES = "files"
    MYSQL = "mysql"
    POSTGRESQL = "postgresql"
    MONGODB = "mongodb"
    DOCKER = "docker"
    SYSTEM = "system"
    BOT_DATABASE = "bot_database"  # the bot's own database (its built-in chain, so losing the bot host loses nothing)


class DbType(StrEnum):
    MYSQL = "mysql"
    POSTGRESQL = "postgresql"
    MONGODB = "mongodb"
    REDIS = "redis"


class AuthMethod(StrEnum):
    PASSWORD = "password"  # noqa: S105 - an enum label, not a password
    SOCKET = "socket"
    SSL = "ssl"
    KERBEROS = "kerberos"


class TestStatus(StrEnum):
    __test__ = False  # not a pytest test class, despite the name (the seed's column is test_status)

    UNTESTED = "untested"
    SUCCESS = "success"
    FAILED = "failed"


class ServerStatus(StrEnum):
    NEW = "new"  # added, never contacted
    UNCONFIRMED = "unconfirmed"  # host key seen, waiting for a person to confirm the fingerprint
    OK = "ok"
    UNREACHABLE = "unreachable"
    HOST_KEY_CHANGED = "host_key_changed"


class PoolKind(StrEnum):
    SSH = "ssh"
    LOCAL = "local"


class PerformanceTier(StrEnum):
    FAST = "fast"
    STANDARD = "standard"
    ARCHIVE = "archive"


class SnapshotMethod(StrEnum):
    NONE = "none"
    LVM = "lvm"
    ZFS = "zfs"
    BTRFS = "btrfs"
    VMWARE = "vmware"
    HYPERV = "hyperv"


class ChainStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    PAUSED = "paused"
    REJECTED = "rejected"
    RETIRED = "retired"  # deleted by a person, repository kept: no runs, its archives still restorable


class RunKind(StrEnum):
    BACKUP = "backup"
    PRUNE = "prune"
    COMPACT = "compact"
    CHECK = "check"
    TEST = "test"
    RESTORE = "restore"
    DRILL = "drill"  # a scheduled restore of the newest archive into a scratch place, verified and removed


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    WARNING = "warning"  # borg exit 1: archive exists, something was skipped
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the bot died while it ran; retried, never reported successful
    SKIPPED = "skipped"  # e.g. not started inside its window
    CANCELLED = "cancelled"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class Integrity(StrEnum):
    """Whether a repository's archives are what the bot recorded (maintenance with full access runs only when OK)."""

    OK = "ok"
    NEEDS_REVIEW = "needs_review"  # the archive list differs from the record: no prune/compact until an admin decides
    QUARANTINED = "quarantined"  # an admin chose to keep everything: no prune/compact until released


class TokenScope(StrEnum):
    READ = "read"
    WRITE = "write"


class Role(StrEnum):
    ADMIN = "admin"  # the whole workspace: servers, pools, host keys, logins, roles, disruptive options
    OPERATOR = "operator"  # one server or one pool, optionally limited to path prefixes and database names


class TimestampedMixin:
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)


class Workspace(Model, TimestampedMixin):
    """A Slack workspace (team) that installed the bot, whose ``settings`` hold approval rules and defaults."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=255, default="")
    settings: dict = fields.JSONField(default=dict)

    class Meta:
        table = "workspace"


class BotIdentity(Model):
    """The bot's own SSH key pair (one per installation) with the private half encrypted."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True, default="default")
    key_type = fields.CharField(max_length=32)
    public_key = fields.TextField()
    private_key = EncryptedTextField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "bot_identity"


class Server(Model, TimestampedMixin):
    """A machine reached over SSH: a backup source, a storage pool host, or both."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    name = fields.CharField(max_length=100)
    host = fields.CharField(max_length=255)
    port = fields.IntField(default=22)
    username = fields.CharField(max_length=64, default="root")
    host_key = fields.TextField(null=True)  # OpenSSH public key line, pinned
    host_key_fingerprint = fields.CharField(max_length=128, null=True)  # SHA256:…
    capabilities: dict | None = fields.JSONField(null=True)
    capabilities_detected_at = fields.DatetimeField(null=True)
    status = fields.CharEnumField(ServerStatus, max_length=24, default=ServerStatus.NEW)
    created_by = fields.CharField(max_length=32, default="")

    class Meta:
        table = "server"
        unique_together = (("team_id", "name"),)


class DatabaseCredential(Model):
    """Credentials for a database on a server (seed table ``database_credentials``)."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    server: fields.ForeignKeyRelation[Server] = fields.ForeignKeyField(
        "models.Server", related_name="credentials", on_delete=fields.CASCADE
    )
    db_type = fields.CharEnumField(DbType, max_length=16)
    host = fields.CharField(max_length=255, default="localhost")
    port = fields.IntField()
    username = fields.CharField(max_length=100)
    password = EncryptedTextField()
    auth_method = fields.CharEnumField(AuthMethod, max_length=16, default=AuthMethod.PASSWORD)
    ssl_config: dict | None = fields.JSONField(null=True)
    is_default = fields.BooleanField(default=False)
    test_status = fields.CharEnumField(TestStatus, max_length=16, default=TestStatus.UNTESTED)
    last_test_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "database_credentials"

    async def make_default(self) -> None:
        """Mark this credential the default for its server and type, clearing any other default."""
        from tortoise.transactions import in_transaction

        async with in_transaction():
            await (
                DatabaseCredential.filter(
                    team_id=self.team_id,
                    server_id=self.server_id,
                    db_type=self.db_type,
                    is_default=True,  # type: ignore[attr-defined]
                )
                .exclude(id=self.id)
                .update(is_default=False)
            )
            self.is_default = True
            await self.save(update_fields=["is_default"])


class StoragePool(Model, TimestampedMixin):
    """Where repositories live: a directory on an SSH host, or on the bot's own host (``local``)."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    name = fields.CharField(max_length=100)
    kind = fields.CharEnumField(PoolKind, max_length=8, default=PoolKind.SSH)
    server: fields.ForeignKeyNullableRelation[Server] = fields.ForeignKeyField(
        "models.Server", related_name="pools", null=True, on_delete=fields.RESTRICT
    )
    base_path = fields.CharField(max_length=1024)
    tier = fields.CharEnumField(PerformanceTier, max_length=16, default=PerformanceTier.STANDARD)
    capacity_bytes = fields.BigIntField(null=True)
    available_bytes = fields.BigIntField(null=True)
    available_checked_at = fields.DatetimeField(null=True)
    quota_bytes = fields.BigIntField(null=True)
    alert_threshold_pct = fields.IntField(default=85)
    # True while the pool is above its threshold and the alert for this crossing was posted (one per crossing)
    alert_active = fields.BooleanField(default=False)
    measure_error = fields.TextField(null=True)  # why the last measurement failed (the pool unreachable, …)

    class Meta:
        table = "storage_pool"
        unique_together = (("team_id", "name"),)


class Repository(Model, TimestampedMixin):
    """A BorgBackup repository in a pool (the seed's ``repository`` with its enhanced columns)."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    pool: fields.ForeignKeyRelation[StoragePool] = fields.ForeignKeyField(
        "models.StoragePool", related_name="repositories", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=100)
    path = fields.CharField(max_length=1024)  # absolute path on the pool host
    encryption = fields.CharField(max_length=32, default="repokey-blake2")
    compression = fields.CharField(max_length=32, default="lz4")
    passphrase = EncryptedTextField()
    key_export = EncryptedTextField(null=True)  # `borg key export` output, so a restore never needs the pool alone
    # Key the *source* servers use to push to this repository (append-only, restricted on the pool).
    client_key_public = fields.TextField(null=True)
    client_key_private = EncryptedTextField(null=True)
    retention: dict = fields.JSONField(default=dict)
    snapshot_method = fields.CharEnumField(SnapshotMethod, max_length=16, default=SnapshotMethod.NONE)
    snapshot_config: dict | None = fields.JSONField(null=True)
    pre_backup_commands: list | None = fields.JSONField(null=True)
    post_backup_commands: list | None = fields.JSONField(null=True)
    test_mode = fields.BooleanField(default=False)
    last_prune_at = fields.DatetimeField(null=True)
    prune_schedule: dict | None = fields.JSONField(null=True)
    size_bytes = fields.BigIntField(null=True)  # borg's deduplicated size of the whole repository (unique_csize)
    size_checked_at = fields.DatetimeField(null=True)
    integrity = fields.CharEnumField(Integrity, max_length=16, default=Integrity.OK)
    integrity_detail: dict | None = fields.JSONField(null=True)  # the difference found, who decided, when

    class Meta:
        table = "repository"
        unique_together = (("pool_id", "name"),)


class BackupSource(Model, TimestampedMixin):
    """What to back up on a server: its type and type-specific configuration."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    server: fields.ForeignKeyRelation[Server] = fields.ForeignKeyField(
        "models.Server", related_name="sources", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=100)
    type = fields.CharEnumField(BackupType, max_length=16)
    config: dict = fields.JSONField(default=dict)
    credential: fields.ForeignKeyNullableRelation[DatabaseCredential] = fields.ForeignKeyField(
        "models.DatabaseCredential", related_name="sources", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "backup_source"


class BackupTemplate(Model, TimestampedMixin):
    """A reusable wizard answer set (the seed's ``backup_templates``)."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    name = fields.CharField(max_length=100)
    description = fields.TextField(default="")
    backup_type = fields.CharEnumField(BackupType, max_length=16)
    source_config: dict = fields.JSONField(default=dict)
    snapshot_method = fields.CharField(max_length=50, null=True)
    retention_policy: dict = fields.JSONField(default=dict)
    compression = fields.CharField(max_length=50, default="lz4")
    encryption = fields.CharField(max_length=50, default="repokey-blake2")
    schedule: dict | None = fields.JSONField(null=True)
    tags: list | None = fields.JSONField(null=True)
    created_by = fields.CharField(max_length=32, default="")

    class Meta:
        table = "backup_templates"
        unique_together = (("team_id", "name"),)


class BackupChain(Model, TimestampedMixin):
    """Sources → repository on a schedule: the unit a person creates, approves, pauses and is told about."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    name = fields.CharField(max_length=100)
    repository: fields.ForeignKeyRelation[Repository] = fields.ForeignKeyField(
        "models.Repository", related_name="chains", on_delete=fields.RESTRICT
    )
    sources: fields.ManyToManyRelation[BackupSource] = fields.ManyToManyField(
        "models.BackupSource", related_name="chains", through="backup_chain_source"
    )
    # {"days": ["mon", …], "at": "02:00"} or {"days": […], "window": ["01:00", "05:00"]}, plus "timezone".
    schedule: dict = fields.JSONField(default=dict)
    timezone = fields.CharField(max_length=64, default="UTC")
    priority = fields.IntField(default=5)
    depends_on: fields.ForeignKeyNullableRelation[BackupChain] = fields.ForeignKeyField(
        "models.BackupChain", related_name="dependents", null=True, on_delete=fields.SET_NULL
    )
    status = fields.CharEnumField(ChainStatus, max_length=24, default=ChainStatus.DRAFT)
    notify_channel = fields.CharField(max_length=32, null=True)
    notify_success = fields.BooleanField(default=True)
    created_by = fields.CharField(max_length=32, default="")
    retired_at = fields.DatetimeField(null=True)
    template: fields.ForeignKeyNullableRelation[BackupTemplate] = fields.ForeignKeyField(
        "models.BackupTemplate", related_name="chains", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "backup_chain"
        unique_together = (("team_id", "name"),)


class WizardSession(Model, TimestampedMixin):
    """One person's pass through the wizard, saved after every step so a restart loses nothing."""

    id = fields.UUIDField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    user_id = fields.CharField(max_length=32)
    channel_id = fields.CharField(max_length=32, null=True)
    state = fields.CharField(max_length=32)
    data: dict = fields.JSONField(default=dict)
    view_id = fields.CharField(max_length=32, null=True)
    version = fields.IntField(default=0)  # bumped on every save; stale writers lose
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "wizard_session"


class Run(Model):
    """One execution: a backup, prune, compact, check, test backup or restore."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    chain: fields.ForeignKeyNullableRelation[BackupChain] = fields.ForeignKeyField(
        "models.BackupChain", related_name="runs", null=True, on_delete=fields.CASCADE
    )
    repository: fields.ForeignKeyNullableRelation[Repository] = fields.ForeignKeyField(
        "models.Repository", related_name="runs", null=True, on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(RunKind, max_length=16)
    status = fields.CharEnumField(RunStatus, max_length=16, default=RunStatus.QUEUED, db_index=True)
    priority = fields.IntField(default=5)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True, db_index=True)
    lock_key = fields.CharField(max_length=255, null=True, db_index=True)
    scheduled_for = fields.DatetimeField(null=True)
    window_ends_at = fields.DatetimeField(null=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    archive_name = fields.CharField(max_length=255, null=True)
    stats: dict | None = fields.JSONField(null=True)
    error = fields.TextField(null=True)
    error_kind = fields.CharField(max_length=32, null=True)
    log_excerpt = fields.TextField(null=True)
    requested_by = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    # job_id: the job that stands for this run in procrastinate's queue (scale-out backend only, else empty).
    # worker_id: the worker process ("host:pid") that claimed the run, on either backend.
    job_id = fields.BigIntField(null=True, db_index=True)
    worker_id = fields.CharField(max_length=128, null=True)
    # remote: the commands this run started on servers under a remote supervisor ({"host", "port", "user", "pid",
    # "argv"}), so that a run found interrupted after a crash can have what it left running stopped.
    remote = fields.JSONField(null=True)
    # spec: what a restore or drill run does (archive, paths or database, target) and, once done, how its result
    # was checked; typed by the restore code, JSON here.
    spec: dict | None = fields.JSONField(null=True)

    class Meta:
        table = "run"


class Approval(Model):
    """A request for a person to approve a chain, or a wizard's answers before anything is set up for them (then
    ``chain`` is set once it is created), decided exactly once, by compare-and-set on ``status``."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    chain: fields.ForeignKeyNullableRelation[BackupChain] = fields.ForeignKeyField(
        "models.BackupChain", related_name="approvals", null=True, on_delete=fields.CASCADE
    )
    session_id = fields.UUIDField(null=True, db_index=True)  # the wizard whose answers wait for this approval
    fingerprint = fields.CharField(max_length=64, null=True)  # … exactly these answers
    summary = fields.TextField(null=True)  # what the approver is shown (the wizard's review), for answers
    requested_by = fields.CharField(max_length=32)
    status = fields.CharEnumField(ApprovalStatus, max_length=16, default=ApprovalStatus.PENDING)
    decided_by = fields.CharField(max_length=32, null=True)
    decided_at = fields.DatetimeField(null=True)
    reason = fields.TextField(null=True)
    channel_id = fields.CharField(max_length=32, null=True)
    message_ts = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "approval"


class VerifiedArchive(Model):
    """An archive the bot saw borg create and then listed at the end of a run it supervised: the record that
    maintenance compares the repository with, so archives made or removed behind the bot's back are noticed."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    repository: fields.ForeignKeyRelation[Repository] = fields.ForeignKeyField(
        "models.Repository", related_name="verified_archives", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=255)
    archive_id = fields.CharField(max_length=64)  # borg's archive id (hex)
    archive_time = fields.DatetimeField(null=True)  # the archive's own start time, as borg lists it
    run_id = fields.IntField(null=True)
    recorded_at = fields.DatetimeField(auto_now_add=True)
    removed_at = fields.DatetimeField(null=True)  # pruned or deleted by the bot itself

    class Meta:
        table = "verified_archive"
        unique_together = (("repository_id", "archive_id"),)


class ApiToken(Model):
    """A token of the HTTP API: only its SHA-256 is kept (looked up by index), with its scope, expiry and use."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    user_id = fields.CharField(max_length=32, null=True)  # the Slack user it acts as (None: /metrics only)
    token_hash = fields.CharField(max_length=64, unique=True)
    scope = fields.CharEnumField(TokenScope, max_length=8, default=TokenScope.READ)
    label = fields.CharField(max_length=100, default="")
    created_by = fields.CharField(max_length=32, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_token"


class SeenRequest(Model):
    """A signed Slack request already handled (by its signature or trigger_id), kept for Slack's replay window,
    so a replayed command or click has no second effect — across processes too."""

    key = fields.CharField(max_length=64, primary_key=True)
    seen_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "seen_request"


class AuditLog(Model):
    """Who did what, when: every state change a person or the scheduler causes."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    actor = fields.CharField(max_length=32)  # Slack user id, or "system"
    action = fields.CharField(max_length=64)
    object_type = fields.CharField(max_length=32)
    object_id = fields.CharField(max_length=64, null=True)
    details: dict = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "audit_log"


class RoleGrant(Model):
    """A role given by an admin to a user, a user group or everyone: admin of the workspace, or operator of one
    server (optionally limited to path prefixes and database names) or of one storage pool."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    role = fields.CharEnumField(Role, max_length=16)
    subject = fields.CharField(max_length=32)  # U…/W… a user, S… a user group, "everyone"
    server: fields.ForeignKeyNullableRelation[Server] = fields.ForeignKeyField(
        "models.Server", related_name="grants", null=True, on_delete=fields.CASCADE
    )
    pool: fields.ForeignKeyNullableRelation[StoragePool] = fields.ForeignKeyField(
        "models.StoragePool", related_name="grants", null=True, on_delete=fields.CASCADE
    )
    paths: list = fields.JSONField(default=list)  # allowed path prefixes on the server (empty: any path)
    databases: list = fields.JSONField(default=list)  # allowed database names on the server (empty: any)
    granted_by = fields.CharField(max_length=32, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "role_grant"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # refused for good by Slack (channel gone, bad blocks): kept for the record


class OutboxMessage(Model):
    """A Slack message waiting to be delivered, in order, surviving Slack outages and bot restarts."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    method = fields.CharField(max_length=32, default="chat.postMessage")  # or chat.update, dm
    channel = fields.CharField(max_length=32)
    payload: dict = fields.JSONField(default=dict)
    thread_key = fields.CharField(max_length=128, null=True, db_index=True)
    ref = fields.CharField(max_length=64, null=True)  # e.g. approval:12, told the message ts once sent
    status = fields.CharEnumField(OutboxStatus, max_length=16, default=OutboxStatus.PENDING, db_index=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    sent_channel = fields.CharField(max_length=32, null=True)
    sent_ts = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox_message"


class ReportThread(Model):
    """The parent message of a chain's report thread for one day, so the day's reports reply to it."""

    id = fields.IntField(primary_key=True)
    team_id = fields.CharField(max_length=32, db_index=True)
    thread_key = fields.CharField(max_length=128, unique=True)
    channel = fields.CharField(max_length=32)
    ts = fields.CharField(max_length=32)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "report_thread"


class Lease(Model):
    """A duty only one process may perform at a time (the scheduler and outbox of backup-bot run), held until
    expires_at and renewed by its holder well before then (see storage.lease)."""

    name = fields.CharField(max_length=64, primary_key=True)
    holder = fields.CharField(max_length=255)
    acquired_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()

    class Meta:
        table = "lease"


TENANT_MODELS: tuple[type[Model], ...] = (
    Server,
    DatabaseCredential,
    StoragePool,
    Repository,
    BackupSource,
    BackupTemplate,
    BackupChain,
    WizardSession,
    Run,
    Approval,
    AuditLog,
    OutboxMessage,
    ReportThread,
    RoleGrant,
)
