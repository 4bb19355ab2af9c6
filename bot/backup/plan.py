"""From the wizard's answers (or a chain's rows) to the engine's :class:`~bot.backup.runner.ChainPlan`.

One place turns "what the person chose" into "what runs": the validation step builds the plan for the real test
backup, the review step creates rows from the same inputs, and the runs layer builds the plan of a stored chain
with :func:`inputs_from_chain` + :func:`build_plan`. Everything the source types need besides their config (the
"facts": probe results, the decrypted database login, swap files, pool paths on the same server) is gathered here,
on the server, at plan time.

Where things live:

- The *source* server is reached with the bot's key (``services.pool``) and its pinned host key.
- An ``ssh`` pool is reached the same way (the bot's own, unrestricted access: init, list, prune, compact); the
  source pushes to it with the per-repository key that :func:`bot.backup.repository.set_up` installed, stored on
  the source under ``~/.config/backup-bot/<repository>/`` (:data:`bot.backup.repository.KEY_DIR`).
- A ``local`` pool is a directory on the bot's own host. Then the source must be the bot's own host too (the
  pool path means nothing on another machine): borg on the source writes to the path directly, there is no push
  key, and the bot reaches the repository through :class:`~bot.transport.LocalTransport`. Such a pool gives no
  append-only protection (the source *is* the pool host).

Errors are :class:`PlanProblem` values naming the wizard step whose answer must change (``step``) and a
sentence for the person; the validation step turns them into "go back to …" buttons.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import inventory
from bot.backup import snapshots, sources
from bot.backup.jobs import ArchiveJob
from bot.backup.repository import KEY_DIR, NAME, PoolAccess, RepoSpec, push_quota
from bot.backup.retention import Policy
from bot.backup.runner import ChainPlan
from bot.backup.schedule import next_runs
from bot.backup.sources import MongoDBFacts, MySQLFacts, PlanError, PostgreSQLFacts
from bot.backup.sources.docker import DockerSourceFacts
from bot.backup.sources.system import SystemFacts
from bot.borg.init import is_unencrypted
from bot.borg.repo import Repo, rsh_command, ssh_url
from bot.inventory import cached_capabilities, ssh_target
from bot.probes import disk, docker, mongodb, mysql, postgresql
from bot.probes.base import ProbeContext, ProbeError
from bot.probes.dbcheck import DbCredential
from bot.probes.disk import MountInfo
from bot.probes.system import SystemInfo
from bot.transport import LocalTransport
from bot.transport.base import Transport, TransportError
from storage.crypto import Secret
from storage.models import (
    BackupChain,
    DatabaseCredential,
    PoolKind,
    Repository,
    Server,
    ServerStatus,
    StoragePool,
)
from storage.tenancy import Tenant

POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(Policy))
# $1 = a path: prints the nearest existing ancestor (the path itself when it exists). A pool's base path may not
# exist before its first repository (borg init --make-parent-dirs creates it), but its file system is known.
_NEAREST = 'p=$1; while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done; printf "%s" "$p"'


class PlanProblem(Exception):
    """An answer cannot be turned into a plan; ``step`` is the wizard step to go back to."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


# --- sizes ------------------------------------------------------------------------------------------------------


def human(n: int | None) -> str:
    """``1536`` → ``1.5 KiB`` (binary units, as du and df count)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


# --- servers and pools --------------------------------------------------------------------------------------------

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_bot_host(server: Server) -> bool:
    """Is ``server`` the machine the bot runs on? (A loopback address, ``localhost``, or the bot's own name.)"""
    host = server.host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    own = {socket.gethostname().lower(), socket.getfqdn().lower()}
    return host in _LOCAL_NAMES or host in own


def server_problem(server: Server | None) -> str | None:
    """Why the bot may not use ``server`` now (None when it may): it must exist and have a confirmed host key."""
    if server is None:
        return "The server no longer exists in this workspace."
    if server.status == ServerStatus.HOST_KEY_CHANGED:
        return (
            f"The host key of {server.name} changed since it was pinned: the bot refuses to connect until an "
            "administrator confirms the new fingerprint."
        )
    if not server.host_key or server.status == ServerStatus.UNCONFIRMED:
        return f"The host key of {server.name} has not been confirmed yet."
    return None


def pool_problem(pool: StoragePool, source: Server | None) -> str | None:
    """Why ``pool`` cannot take a repository for ``source`` (None when it can)."""
    if pool.kind == PoolKind.LOCAL:
        if source is not None and not is_bot_host(source):
            return (
                f"{pool.name} is a directory on the bot's own host, so only a source on that same host can write "
                f"to it; {source.name} ({source.host}) is another machine. Choose an SSH pool, or add this pool's "
                "host as a server and make it an SSH pool."
            )
        return None
    problem = server_problem(pool.server)
    return f"{pool.name} cannot be used: {problem}" if problem else None


async def load_server(tenant: Tenant, server_id: Any) -> Server:
    server = await tenant.get_or_none(Server, id=server_id) if isinstance(server_id, int) else None
    problem = server_problem(server)
    if problem:
        raise PlanProblem("server", problem)
    assert server is not None
    return server


async def load_pool(tenant: Tenant, pool_id: Any, source: Server | None = None) -> StoragePool:
    pool = None
    if isinstance(pool_id, int):
        pool = await tenant.query(StoragePool).filter(id=pool_id).select_related("server").first()
    if pool is None:
        raise PlanProblem("pool", "The storage pool no longer exists in this workspace: choose another one.")
    problem = pool_problem(pool, source)
    if problem:
        raise PlanProblem("pool", problem)
    return pool


def source_transport(server: Server, services: Any) -> Transport:
    return services.pool.transport(ssh_target(server))


def pool_transport(pool: StoragePool, services: Any) -> Transport:
    """The bot's own access to the pool: SSH to its server, or the bot's host for a ``local`` pool."""
    if pool.kind == PoolKind.LOCAL:
        return LocalTransport()
    return services.pool.transport(ssh_target(pool.server))


def pool_borg(pool: StoragePool, services: Any) -> str:
    """Given a pool, return the borg the bot's own access to it runs: on an SSH pool the configured name (found on
    the pool login's PATH); on a ``local`` pool the bot's own borg — the one installed beside its interpreter when
    there is one (a service's PATH rarely holds a virtualenv's bin directory), else the configured name on PATH."""
    configured = getattr(services, "borg", "borg")
    return local_borg(configured) if pool.kind == PoolKind.LOCAL else configured


def local_borg(configured: str = "borg") -> str:
    """Given the configured borg command, return the one this machine runs: a path as it is; else the borg beside
    the bot's interpreter, else the name found on PATH (or the name itself, to fail with "not found")."""
    if "/" in configured:
        return configured
    beside = Path(sys.executable).with_name(configured)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(configured) or configured


def repository_at_pool(repository: Repository, services: Any) -> tuple[Transport, Repo, str]:
    """Given a repository row (``pool`` and its server loaded), return the bot's own access to it — the pool's
    transport, the repository by path (its own borg client state) and the pool-side borg — as a backup's plan has it.
    Maintenance, restores, drills and the archive listing all open a repository this way."""
    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal(),
                unencrypted=is_unencrypted(repository.encryption))  # fmt: skip
    pool = repository.pool
    return pool_transport(pool, services), repo, pool_borg(pool, services)


def pool_access(pool: StoragePool, services: Any) -> PoolAccess:
    """How the bot and the source reach an ``ssh`` pool (see :class:`bot.backup.repository.PoolAccess`)."""
    server = pool.server
    return PoolAccess(
        transport=pool_transport(pool, services),
        host=server.host,
        port=server.port,
        user=server.username,
        host_key=server.host_key or "",
        storage_quota=push_quota(pool.quota_bytes, pool.capacity_bytes),
    )


def repo_path(pool: StoragePool, name: str) -> str:
    return RepoSpec(name=name, base_path=pool.base_path).path


def key_files(name: str) -> tuple[str, str]:
    """Where :func:`bot.backup.repository.set_up` put the push key and the pool's known_hosts on the source
    (relative to the source login's home)."""
    return f"{KEY_DIR}/{name}/id_ed25519", f"{KEY_DIR}/{name}/known_hosts"


def probe_context(server: Server, services: Any) -> ProbeContext:
    """A probe context for ``server`` with the privileges its cached system facts report."""
    caps = cached_capabilities(server)
    system = caps.get("system", SystemInfo) if caps else None
    if system is None:
        return ProbeContext(source_transport(server, services), privileged=server.username == "root")
    return ProbeContext(
        source_transport(server, services),
        privileged=system.privileged,
        sudo=not system.is_root and system.sudo == "passwordless",
        system=system,
    )


async def pool_space(pool: StoragePool, services: Any, *, timeout: float = 15.0) -> MountInfo:
    """Free space of the pool's file system, measured now and stored on the row (``available_bytes``,
    ``capacity_bytes``, ``available_checked_at``). Raises :class:`PlanProblem` (step ``pool``) when the pool
    cannot be measured."""
    transport = pool_transport(pool, services)
    try:
        async with asyncio.timeout(timeout):
            nearest = await transport.run(["sh", "-c", _NEAREST, "sh", pool.base_path], timeout=timeout)
            if not nearest.ok:
                raise PlanProblem("pool", f"{pool.name}: {nearest.describe_failure()}.")
            info = await disk.mount_info(ProbeContext(transport, privileged=False), nearest.out.strip() or "/")
    except (TransportError, ProbeError) as exc:
        raise PlanProblem("pool", f"The free space of {pool.name} could not be measured: {exc}") from exc
    except TimeoutError:
        raise PlanProblem("pool", f"{pool.name} did not answer within {timeout:g} s.") from None
    pool.available_bytes = info.avail_bytes
    pool.capacity_bytes = info.size_bytes
    pool.available_checked_at = datetime.now(UTC)
    await pool.save(update_fields=["available_bytes", "capacity_bytes", "available_checked_at"])
    return info


async def login_home(transport: Transport) -> str:
    """The login's home directory on a server (where the push key was written)."""
    result = await transport.run(["sh", "-c", 'printf "%s" "$HOME"'], timeout=30)
    home = result.out.strip()
    if not result.ok or not home.startswith("/"):
        why = result.describe_failure() if not result.ok else "HOME is empty"
        raise PlanProblem("server", f"The home directory of the login on {transport.name} is not known ({why}).")
    return home.rstrip("/") or "/"


# --- retention --------------------------------------------------------------------------------------------------


def retention_policy(retention: Mapping[str, Any] | None) -> dict[str, int | str] | None:
    """The borg keep options of the wizard's ``retention`` answer (its ``preset`` label dropped)."""
    if not retention:
        return None
    values = {k: v for k, v in retention.items() if k in POLICY_FIELDS}
    try:
        policy = Policy(**values)
    except TypeError as exc:
        raise PlanProblem("retention", f"The retention policy is not valid: {exc}") from None
    return policy.to_dict() or None


def check_retention(retention: Mapping[str, Any] | None) -> str | None:
    """A sentence when the retention answer would be refused by borg prune (None when fine)."""
    from bot.backup.retention import validate

    if not retention:
        return "No retention policy was chosen."
    try:
        validate(Policy(**{k: v for k, v in retention.items() if k in POLICY_FIELDS}))
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


# --- inputs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainInputs:
    """Everything a plan is made of, as plain values (one source of a chain)."""

    server: Server
    pool: StoragePool  # with ``server`` fetched
    repo_name: str
    passphrase: str = field(repr=False)
    backup_type: str = "files"
    source_config: Mapping[str, Any] = field(default_factory=dict)
    credential: DatabaseCredential | None = None
    compression: str = "lz4"
    snapshot_method: str = "none"
    retention: Mapping[str, Any] | None = None
    encryption: str = "repokey-blake2"

    @property
    def repo_path(self) -> str:
        return repo_path(self.pool, self.repo_name)

    @property
    def unencrypted(self) -> bool:
        """borg asks each new client of an unencrypted (``none`` / ``authenticated``) repository to confirm it; the
        bot's records saying so is that confirmation (see :meth:`bot.borg.repo.Repo.env`)."""
        return is_unencrypted(self.encryption)


async def credential_row(tenant: Tenant, server: Server, credential_id: Any) -> DatabaseCredential | None:
    if credential_id is None:
        return None
    row = await tenant.get_or_none(DatabaseCredential, id=credential_id, server_id=server.id)
    if row is None:
        raise PlanProblem("source", "The database login chosen for this source no longer exists: choose one again.")
    return row


async def inputs_from_data(tenant: Tenant, data: Mapping[str, Any], passphrase: str) -> ChainInputs:
    """The plan inputs of a wizard session's answers (``passphrase``: the repository's, in plain text)."""
    server = await load_server(tenant, data.get("server_id"))
    pool = await load_pool(tenant, data.get("pool_id"), server)
    backup_type = data.get("backup_type")
    if backup_type not in sources.SOURCES:
        raise PlanProblem("type", "No backup type was chosen.")
    source = data.get("source")
    if not isinstance(source, Mapping):
        raise PlanProblem("source", "The source has not been set up.")
    repository = data.get("repository") or {}
    name = repository.get("name") or ""
    if not NAME.match(name):
        raise PlanProblem("repository", f"{name!r} is not a valid repository name.")
    return ChainInputs(
        server=server,
        pool=pool,
        repo_name=name,
        passphrase=passphrase,
        backup_type=backup_type,
        source_config=source,
        credential=await credential_row(tenant, server, data.get("credential_id")),
        compression=repository.get("compression") or "lz4",
        snapshot_method=(data.get("snapshot") or {}).get("method") or "none",
        retention=data.get("retention"),
        encryption=repository.get("encryption") or "repokey-blake2",
    )


async def inputs_from_chain(chain: BackupChain) -> list[ChainInputs]:
    """One :class:`ChainInputs` per source of a stored chain (for the runs layer)."""
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    tenant = Tenant(chain.team_id)
    found = []
    for source in await chain.sources.all().select_related("server"):
        found.append(
            ChainInputs(
                server=source.server,
                pool=repository.pool,
                repo_name=repository.name,
                passphrase=repository.passphrase.reveal(),
                backup_type=source.type.value,
                source_config=source.config,
                credential=await credential_row(tenant, source.server, source.credential_id),  # type: ignore[attr-defined]
                compression=repository.compression,
                snapshot_method=repository.snapshot_method.value,
                retention=repository.retention,
                encryption=repository.encryption,
            )
        )
    return found


# --- facts --------------------------------------------------------------------------------------------------------


def db_credential(row: DatabaseCredential | None) -> DbCredential | None:
    """A stored login, decrypted, as the probes' :class:`DbCredential` (None without one)."""
    if row is None:
        return None
    if row.db_type.value not in ("mysql", "postgresql", "mongodb"):
        raise PlanProblem("source", f"{row.db_type.value} logins cannot be used for backups.")
    return inventory.db_credential(row)


async def swap_files(ctx: ProbeContext) -> tuple[str, ...]:
    result = await ctx.run(["cat", "/proc/swaps"], what="Reading /proc/swaps", check=False)
    found = []
    for line in result.out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "file":
            found.append(parts[0].replace("\\040", " "))
    return tuple(found)


async def local_pool_paths(server: Server) -> tuple[str, ...]:
    """Base paths of this workspace's pools that live on ``server`` (a system backup must leave them out)."""
    pools = await Tenant(server.team_id).query(StoragePool).select_related("server")
    found = []
    for pool in pools:
        same = pool.server is not None and (
            pool.server.id == server.id or (pool.server.host == server.host and pool.server.port == server.port)
        )
        if same or (pool.kind == PoolKind.LOCAL and is_bot_host(server)):
            found.append(pool.base_path)
    return tuple(found)


async def gather_facts(inputs: ChainInputs, ctx: ProbeContext) -> Any:
    """What the source type's ``plan`` needs besides its config, probed on the server now."""
    kind = inputs.backup_type
    try:
        if kind == "files":
            return None
        if kind == "system":
            return SystemFacts(swap_files=await swap_files(ctx), local_pool_paths=await local_pool_paths(inputs.server))
        if kind == "docker":
            return DockerSourceFacts(docker=await docker.probe(ctx, sizes="none"))
        given = db_credential(inputs.credential)
        if kind == "mysql":
            info = await mysql.probe(ctx, mysql.credential_from(given) if given else None)
            login = given or info.credential
            if login is None:
                raise PlanProblem("source", info.note or "No working MySQL/MariaDB login was found.")
            return MySQLFacts(info=info, credential=login)
        if kind == "postgresql":
            info = await postgresql.probe(ctx, postgresql.credential_from(given) if given else None)
            login = given or info.access
            if login is None:
                raise PlanProblem("source", info.note or "No working PostgreSQL login was found.")
            return PostgreSQLFacts(info=info, credential=login)
        if kind == "mongodb":
            login = mongodb.credential_from(given) if given else mongodb.MongoCredential()
            info = await mongodb.probe(ctx, login)
            if not info.running:
                raise PlanProblem("source", info.note or "MongoDB does not answer on this server.")
            return MongoDBFacts(info=info, credential=given or login)
    except TransportError as exc:
        raise PlanProblem("server", f"The source server could not be reached: {exc}") from exc
    except ProbeError as exc:
        raise PlanProblem("source", str(exc)) from exc
    raise PlanProblem("type", f"Unknown backup type {kind!r}.")


# --- the plan -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltPlan:
    plan: ChainPlan
    ctx: ProbeContext  # the source server's probe context (snapshot checks use it)
    facts: Any

    @property
    def jobs(self) -> Sequence[ArchiveJob]:
        return self.plan.jobs


def new_run_id() -> str:
    """A snapshot-safe run id, unique per attempt (see :mod:`bot.backup.snapshots.base`)."""
    return f"r{secrets.token_hex(6)}"


async def build_plan(inputs: ChainInputs, services: Any, *, run_id: str | None = None) -> BuiltPlan:
    """The engine's plan for ``inputs``: facts probed now, jobs planned by the source type, the repository reached
    from the source (push) and from the bot (pool access). Raises :class:`PlanProblem`."""
    ctx = probe_context(inputs.server, services)
    try:
        config = sources.load_config(inputs.backup_type, inputs.source_config)
    except PlanError as exc:
        raise PlanProblem("source", f"The source settings are not valid: {exc}") from None
    facts = await gather_facts(inputs, ctx)
    try:
        jobs = sources.get(inputs.backup_type).plan(config, facts)
    except PlanError as exc:
        raise PlanProblem("source", str(exc)) from None
    at_source, at_pool = await repos_for(inputs, ctx.transport)
    snapshot = None
    if inputs.snapshot_method not in ("none", "", None):
        try:
            driver = snapshots.driver(inputs.snapshot_method)  # type: ignore[arg-type]
        except ValueError as exc:
            raise PlanProblem("snapshot", str(exc)) from None
        snapshot = snapshots.factory(driver, ctx, run_id or new_run_id())
    plan = ChainPlan(
        prefix=inputs.repo_name,
        jobs=jobs,
        source=ctx.transport,
        repo_at_source=at_source,
        pool=pool_transport(inputs.pool, services),
        repo_at_pool=at_pool,
        compression=inputs.compression,
        retention=retention_policy(inputs.retention),
        sudo=ctx.sudo,
        snapshot=snapshot,
        borg=services.borg,
        pool_borg=pool_borg(inputs.pool, services),
    )
    return BuiltPlan(plan=plan, ctx=ctx, facts=facts)


async def repos_for(inputs: ChainInputs, source: Transport) -> tuple[Repo, Repo]:
    """Given a chain's inputs and the source's transport, return the repository as the source pushes to it and as
    the bot opens it on the pool. Each is its own borg client with its own state (:meth:`Repo.command`), also when
    source and pool are one host and one login: the pool side by path, the source by ``ssh://`` (or, for a
    ``local`` pool, by path from the source's own login)."""
    path = inputs.repo_path
    at_pool = Repo(url=path, passphrase=inputs.passphrase, unencrypted=inputs.unencrypted)
    if inputs.pool.kind == PoolKind.LOCAL:
        return at_pool, at_pool
    home = await login_home(source)
    key, known = key_files(inputs.repo_name)
    server = inputs.pool.server
    at_source = Repo(
        url=ssh_url(server.username, server.host, server.port, path),
        passphrase=inputs.passphrase,
        rsh=rsh_command(f"{home}/{key}", f"{home}/{known}"),
        unencrypted=inputs.unencrypted,
    )
    return at_source, at_pool


def reveal(token: str | None) -> str | None:
    """The plain text of a sealed ``*_token`` value of the session data."""
    return Secret(token).reveal() if token else None


# --- schedule preview ----------------------------------------------------------------------------------------------


def next_runs_preview(schedule: Mapping[str, Any] | None, count: int = 5) -> list[datetime] | str | None:
    """The next ``count`` runs of a schedule answer, from :func:`bot.backup.schedule.next_runs` (the scheduler's own
    math, so the preview matches it). None without a schedule; a string when it refuses the schedule (the sentence
    says why)."""
    if not schedule:
        return None
    try:
        return list(next_runs(dict(schedule), count))
    except (ValueError, KeyError, TypeError) as exc:
        return str(exc) or "The schedule is not valid."


def format_runs(runs: Sequence[datetime], timezone: str | None = None) -> str:
    """``Mon 02 Mar 02:00, Wed 04 Mar 02:00 …`` in the schedule's time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    shown = [(r.astimezone(tz) if tz and r.tzinfo else r).strftime("%a %d %b %Y %H:%M") for r in runs]
    return ", ".join(shown)


def paragraphs(lines: Sequence[str], limit: int = 2800) -> tuple[str, ...]:
    """``lines`` joined into as few notes as fit Slack's 3000-character section text (one block each)."""
    found: list[str] = []
    current = ""
    for line in lines:
        line = line[:limit]
        if current and len(current) + 1 + len(line) > limit:
            found.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        found.append(current)
    return tuple(found)
