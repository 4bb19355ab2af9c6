"""Storage pools: listing them (everyone sees the pools granted to them), adding, editing and removing one (admins).

A pool is a directory on a server the bot reaches over SSH (``ssh``) or on the bot's own host (``local``, "this
machine"). Adding one checks for real before anything is stored: borg 1.4 answers on the pool's host (else the
install hint), the directory exists or can be created (``mkdir -p``) and the login can write in it (a probe file is
written and removed), and the free space is measured (and kept on the row). A pool on a new SSH host pins that
host's key like a server's (:mod:`bot.services.servers`): the admin gives the fingerprint they obtained from the
host itself, and it must be the one the host presents. Every failure is one sentence and stores nothing: no pool
row, and no server row left behind by a failed SSH add.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.alerts import AlertBus
from bot.backup import capacity
from bot.backup.plan import local_borg
from bot.inventory import fetch_host_key
from bot.probes import borg as borg_probe
from bot.probes import disk, system
from bot.probes.base import ProbeContext, ProbeError, missing_program
from bot.services import servers
from bot.transport import SSHPool, SSHTarget
from bot.transport.base import Transport, TransportError
from bot.transport.local import LocalTransport
from bot.validation import InvalidInput
from bot.validation import host as valid_host
from bot.validation import port as valid_port
from bot.validation import username as valid_username
from storage.models import PerformanceTier, PoolKind, Repository, Server, StoragePool
from storage.orm import IntegrityError

MAX_NAME = 100
TIERS = tuple(t.value for t in PerformanceTier)
THIS_MACHINE = "this machine"
DEFAULT_ALERT = 85
PROBE_FILE = ".backup-bot-write-test"
MAX_NAMED_REPOS = 10

# $1 = the pool directory. Exit 3: it cannot be created; 4: no file can be written in it; 5: the probe file
# cannot be removed. Nothing from the path is part of the script text.
WRITE_CHECK = r"""
p=$1
mkdir -p -- "$p" || exit 3
f="$p/.backup-bot-write-test.$$"
touch -- "$f" || exit 4
rm -f -- "$f" || exit 5
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


class _Keep:
    """Leave a value as it is in an edit (a quota may also be set to None: no quota)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class NewPool:
    """A pool to add. ``host`` None: a directory on this machine (the bot's own host)."""

    name: str
    path: str
    host: str | None = None
    port: int = 22
    user: str = "root"
    fingerprint: str = ""  # SHA256:… obtained from the host itself (not needed for an already-confirmed server)
    quota_bytes: int | None = None
    tier: str = PerformanceTier.STANDARD.value
    alert_at: int = DEFAULT_ALERT


@dataclass(frozen=True)
class PoolEdit:
    """What an edit changes; fields left at KEEP stay as they are."""

    name: Any = KEEP
    quota_bytes: Any = KEEP  # int, or None for no quota
    tier: Any = KEEP
    alert_at: Any = KEEP


@dataclass
class PoolTools:
    """How adding a pool reaches it: the bot's SSH pool (its key), the borg command there, the alert bus for the
    host key pin notice, and how long each check may take."""

    ssh: SSHPool | None = None
    borg: str = "borg"
    alerts: AlertBus | None = None
    timeout: float = 20.0


@dataclass(frozen=True)
class PoolView:
    """One pool as every surface shows it (``host`` None: this machine)."""

    id: int
    name: str
    kind: str
    host: str | None
    port: int | None
    user: str | None
    server: str | None
    path: str
    tier: str
    free_bytes: int | None
    total_bytes: int | None
    quota_bytes: int | None
    used_bytes: int
    unmeasured: int
    repositories: tuple[str, ...]
    measured_at: datetime | None
    alert_threshold_pct: int
    alert_active: bool
    measure_error: str | None
    fill_pct: float | None = None

    @property
    def where(self) -> str:
        """``root@host:22`` or "this machine"."""
        return THIS_MACHINE if self.host is None else f"{self.user}@{self.host}:{self.port}"

    def as_json(self) -> dict[str, Any]:
        """Given a view, return it as JSON-able data (times as ISO 8601) for the CLI and the API."""
        data = asdict(self)
        data["repositories"] = list(self.repositories)
        data["measured_at"] = self.measured_at.isoformat() if self.measured_at else None
        return data


# -- input -------------------------------------------------------------------------------------------------------


def parse_size(text: object) -> int | None:
    """Given ``500G``, ``2T``, ``1.5TiB``, ``750GB`` or a number of bytes, return bytes (None for empty / none).

    K, M, G, T, P alone and with ``iB`` are binary (as df -h and the bot's own figures count: 1 G = 1024³ bytes);
    with ``B`` alone (``GB``) they are decimal, as disk vendors count."""
    value = str(text if text is not None else "").strip()
    if value.lower() in ("", "none", "no", "off", "-"):
        return None
    match = _SIZE.match(value)
    if match is None:
        raise Refused(f"{value[:40]!r} is not a size: give a number with a unit, like 500G, 2T or 750GB.")
    number, unit, tail = match.group(1), match.group(2).lower(), match.group(3).lower()
    base = 1000 if tail == "b" and unit else 1024
    size = int(float(number) * base ** _POWERS[unit])
    if size <= 0:
        raise Refused("A quota must be more than 0 bytes (or none).")
    return size


def _label(name: object) -> str:
    label = " ".join(str(name or "").split())
    if not label or len(label) > MAX_NAME:
        raise Refused("Give the pool a name: one line of at most 100 characters.")
    return label


def _path(base_path: object) -> str:
    path = authz.normal_path(str(base_path or ""))
    if path is None or path == "/" or any(c in str(base_path) for c in '"\n\r\x00\\'):
        raise Refused(f"{str(base_path)[:80]!r} is not a usable pool directory: give an absolute path below / "
                      "without quotes or backslashes, like /srv/borg.")  # fmt: skip
    return path


def _tier(tier: object) -> str:
    value = str(tier or "").strip().lower()
    if value not in TIERS:
        raise Refused(f"The tier is one of {', '.join(TIERS)}, not {str(tier)[:20]!r}.")
    return value


def _alert(value: object) -> int:
    try:
        pct = int(str(value).strip().rstrip("%"))
    except ValueError:
        pct = 0
    if not 1 <= pct <= 100:
        raise Refused(f"The alert threshold is a whole percentage from 1 to 100, not {str(value)[:20]!r}.")
    return pct


def _quota(value: object) -> int | None:
    if value is None or isinstance(value, int):
        if isinstance(value, int) and (isinstance(value, bool) or value <= 0):
            raise Refused("A quota must be a positive number of bytes (or none).")
        return value
    return parse_size(value)


def validated(new: NewPool) -> NewPool:
    """Given a pool to add as typed, return it normalised (name, path, address, tier, quota, threshold), or raise
    the sentence naming the first bad value."""
    try:
        host = valid_host(new.host) if new.host not in (None, "") else None
        port = valid_port(new.port) if host else 22
        user = valid_username(new.user or "root") if host else ""
    except InvalidInput as exc:
        raise Refused(str(exc)) from None
    return NewPool(name=_label(new.name), path=_path(new.path), host=host, port=port, user=user,
                   fingerprint=str(new.fingerprint or "").strip(), quota_bytes=_quota(new.quota_bytes),
                   tier=_tier(new.tier), alert_at=_alert(new.alert_at))  # fmt: skip


# -- checks on the pool's host -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    borg_version: str
    free_bytes: int | None
    total_bytes: int | None


async def _system_info(transport: Transport) -> system.SystemInfo | None:
    try:
        return await system.probe(ProbeContext(transport, privileged=False))
    except (ProbeError, TransportError):
        return None


async def check_borg(transport: Transport, where: str, borg: str, timeout: float) -> str:
    """Given the pool's host, return the borg version there, or raise the sentence with the install hint."""
    result = await transport.run([borg, "--version"], timeout=timeout)
    if missing_program(result):
        hint = borg_probe.install_hint(await _system_info(transport))
        raise Refused(f"borg is not installed on {where} (`{borg}` was not found for the login); the pool needs "
                      f"borg 1.4 there. {hint}")  # fmt: skip
    if not result.ok:
        raise Refused(f"`{borg} --version` failed on {where}: {result.describe_failure()}. Install borg 1.4 there.")
    try:
        verdict = borg_probe.from_version_output(result.out, None)
    except ProbeError as exc:
        raise Refused(f"On {where}: {exc}") from None
    if not verdict.supported:
        hint = borg_probe.install_hint(await _system_info(transport))
        raise Refused(f"On {where}, {verdict.summary} {hint}")
    return verdict.version or ""


async def check_writable(transport: Transport, path: str, where: str, login: str, timeout: float) -> None:
    """Create ``path`` if needed and write and remove a probe file in it, or raise the sentence that says which
    part failed and what to do."""
    result = await transport.run(["sh", "-c", WRITE_CHECK, "sh", path], timeout=timeout)
    if result.ok:
        return
    detail = (result.err.strip().splitlines() or [""])[-1][:200]
    why = f" ({detail})" if detail else ""
    if result.exit_status == 3:
        raise Refused(f"{path} does not exist on {where} and the login {login} cannot create it{why}: create it "
                      f"there and give {login} write access, or choose another directory.")  # fmt: skip
    if result.exit_status == 4:
        raise Refused(f"{path} on {where} is not writable by the login {login}{why}: give {login} write access "
                      "(chown or chmod) or choose another directory.")  # fmt: skip
    raise Refused(f"The write check in {path} on {where} failed: {result.describe_failure()}.")


async def check_location(transport: Transport, path: str, *, where: str, login: str, borg: str,
                         timeout: float) -> Measured:  # fmt: skip
    """Given a transport to the pool's host, return borg's version and the free space, after proving the directory
    is usable; any failure raises one sentence (nothing has been stored yet)."""
    try:
        version = await check_borg(transport, where, borg, timeout)
        await check_writable(transport, path, where, login, timeout)
        info = await disk.mount_info(ProbeContext(transport, privileged=False), path)
    except TransportError as exc:
        raise Refused(f"The bot cannot use {where}: {exc}") from None
    except ProbeError as exc:
        raise Refused(f"The free space of {path} on {where} could not be measured: {exc}") from None
    return Measured(version, info.avail_bytes, info.size_bytes)


def _local_login() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


# -- the pool's SSH host ------------------------------------------------------------------------------------------


async def _known_server(actor: Actor, new: NewPool) -> Server | None:
    return await actor.tenant.query(Server).filter(host=new.host, port=new.port, username=new.user).order_by(
        "id").first()  # fmt: skip


async def _presented_key(actor: Actor, new: NewPool, known: Server | None, timeout: float) -> tuple[str, str]:
    """Given an SSH pool to add, return (the host key to trust, its fingerprint): a confirmed server's pinned key,
    or the key the host presents when it is the one the admin typed; else the refusal (audited on a mismatch)."""
    typed = servers.typed_fingerprint(new.fingerprint) if new.fingerprint else None
    if new.fingerprint and typed is None:
        raise Refused(f"{new.fingerprint[:60]!r} is not a host key fingerprint: give the SHA256:… line that "
                      "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the host.")  # fmt: skip
    if known is not None and known.host_key:
        if typed and typed != known.host_key_fingerprint:
            raise Refused(f"The fingerprint you gave ({typed}) is not the one pinned for {known.name} "
                          f"({known.host_key_fingerprint}); nothing was stored. Check it with the host's "
                          "administrator.")  # fmt: skip
        return known.host_key, known.host_key_fingerprint or ""
    if typed is None:
        raise Refused(f"Give the host key fingerprint of {new.host}:{new.port} that you obtained from the host "
                      "itself (on its console: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`): the bot "
                      "trusts the host only if it presents exactly that key.")  # fmt: skip
    try:
        info = await fetch_host_key(new.host or "", new.port, timeout=timeout)
    except TransportError as exc:
        raise Refused(f"{new.host}:{new.port} cannot be reached: {exc}") from None
    if info.fingerprint != typed:
        await record(actor, "pool.pin_refused", "server", None, host=new.host, port=new.port, typed=typed,
                     presented=info.fingerprint)  # fmt: skip
        raise Refused(f"The fingerprint you gave ({typed}) is not the one {new.host}:{new.port} presents "
                      f"({info.fingerprint}); nothing was stored. If yours is right, something else answers at "
                      "that address: check DNS and the network before trusting it.")  # fmt: skip
    return info.key_line, info.fingerprint


async def _server_name(actor: Actor, new: NewPool) -> str:
    """A free server name for the pool's host: its address, else login@address:port."""
    for name in (new.host or "", f"{new.host}:{new.port}", f"{new.user}@{new.host}:{new.port}"):
        if not await actor.tenant.query(Server).filter(name=name[:MAX_NAME]).exists():
            return name[:MAX_NAME]
    raise Refused(f"Servers named {new.host} already exist; remove or rename one first.")


async def _pin(actor: Actor, new: NewPool, known: Server | None, key_line: str, fp: str,
               tools: PoolTools) -> tuple[Server, bool]:  # fmt: skip
    """Given a checked SSH pool host, return its server row with the key pinned (and whether the row is new)."""
    if known is not None and known.host_key:
        return known, False
    spec = servers.NewServer(name=await _server_name(actor, new) if known is None else known.name,
                             host=new.host or "", port=new.port, username=new.user)  # fmt: skip
    try:
        server, info = await servers.propose(actor, spec, known, timeout=tools.timeout)
    except TransportError as exc:
        raise Refused(f"{new.host}:{new.port} cannot be reached: {exc}") from None
    try:
        if info.key_line != key_line:
            raise Refused(f"{new.host}:{new.port} presented another host key while the pool was added; nothing "
                          "was stored. Try again, and check the host if it happens again.")  # fmt: skip
        await servers.confirm_key(actor, server, info.key_line, fp, alerts=tools.alerts)
    except BaseException:
        if known is None:
            await server.delete()
        raise
    return server, known is None


# -- operations --------------------------------------------------------------------------------------------------


async def add_pool(actor: Actor, new: NewPool, tools: PoolTools) -> PoolView:
    """Given an admin and a pool to add, check it for real and return the stored pool; any refusal stores nothing.

    Checks come before every effect: the role, the values, the name, then the host key, borg, the directory and
    its free space on the pool's host; only then is the host pinned (a new server row) and the pool row written."""
    await authz.require_admin(actor, "add storage pools")
    new = validated(new)
    if await actor.tenant.query(StoragePool).filter(name=new.name).exists():
        raise Refused(f"A storage pool named {new.name!r} already exists in this workspace; choose another name.")
    known, key_line, fp = None, "", ""
    if new.host is None:
        transport: Transport = LocalTransport()
        where, login = THIS_MACHINE, _local_login()
    else:
        if tools.ssh is None:
            raise Refused("This surface cannot reach other hosts: add the pool from Slack or the command line.")
        known = await _known_server(actor, new)
        key_line, fp = await _presented_key(actor, new, known, tools.timeout)
        transport = tools.ssh.transport(SSHTarget(new.host, new.port, new.user, key_line, workspace=actor.team_id))
        where, login = f"{new.user}@{new.host}:{new.port}", new.user
    borg = local_borg(tools.borg) if new.host is None else tools.borg  # this machine: the bot's own borg
    measured = await check_location(transport, new.path, where=where, login=login, borg=borg,
                                    timeout=tools.timeout)  # fmt: skip
    server, created = (None, False) if new.host is None else await _pin(actor, new, known, key_line, fp, tools)
    try:
        pool = await actor.tenant.create(
            StoragePool, name=new.name, kind=PoolKind.LOCAL if server is None else PoolKind.SSH, server=server,
            base_path=new.path, tier=PerformanceTier(new.tier), quota_bytes=new.quota_bytes,
            alert_threshold_pct=new.alert_at, available_bytes=measured.free_bytes,
            capacity_bytes=measured.total_bytes, available_checked_at=datetime.now(UTC))  # fmt: skip
    except IntegrityError:
        if created and server is not None:
            await server.delete()
        raise Refused(f"A storage pool named {new.name!r} already exists in this workspace.") from None
    after = {**_settings(pool), "host": where, "borg": measured.borg_version, "free_bytes": measured.free_bytes,
             "total_bytes": measured.total_bytes}  # fmt: skip
    await record(actor, "pool.add", "pool", pool.id, after=after)
    return await view_of(pool)


def _settings(pool: StoragePool) -> dict[str, Any]:
    return {"name": pool.name, "base_path": pool.base_path, "tier": pool.tier.value, "quota_bytes": pool.quota_bytes,
            "alert_threshold_pct": pool.alert_threshold_pct}  # fmt: skip


async def edit_pool(actor: Actor, name: str, change: PoolEdit) -> PoolView:
    """Given an admin, a pool's name and what to change (name, quota, tier, threshold), return the changed pool."""
    await authz.require_admin(actor, "change storage pools")
    pool = await authz.named(actor, StoragePool, name, "storage pool")
    before = _settings(pool)
    if change.name is not KEEP:
        label = _label(change.name)
        if label != pool.name and await actor.tenant.query(StoragePool).filter(name=label).exists():
            raise Refused(f"A storage pool named {label!r} already exists in this workspace; choose another name.")
        pool.name = label
    if change.quota_bytes is not KEEP:
        pool.quota_bytes = _quota(change.quota_bytes)
    if change.tier is not KEEP:
        pool.tier = PerformanceTier(_tier(change.tier))
    if change.alert_at is not KEEP:
        pool.alert_threshold_pct = _alert(change.alert_at)
    after = _settings(pool)
    if after == before:
        return await view_of(pool)
    try:
        await pool.save(update_fields=["name", "quota_bytes", "tier", "alert_threshold_pct"])
    except IntegrityError:
        raise Refused(f"A storage pool named {pool.name!r} already exists in this workspace.") from None
    await record(actor, "pool.edit", "pool", pool.id, before=before, after=after)
    return await view_of(pool)


async def remove_pool(actor: Actor, name: str) -> None:
    """Remove a pool that holds no repository of the bot (its files on disk are left as they are); refused while
    repositories use it, naming them."""
    await authz.require_admin(actor, "remove storage pools")
    pool = await authz.named(actor, StoragePool, name, "storage pool")
    names = await actor.tenant.query(Repository).filter(pool_id=pool.id).order_by("name").values_list("name",
                                                                                                       flat=True)
    if names:
        shown = ", ".join(names[:MAX_NAMED_REPOS]) + (f" and {len(names) - MAX_NAMED_REPOS} more"
                                                      if len(names) > MAX_NAMED_REPOS else "")  # fmt: skip
        raise Refused(f"{pool.name} still holds the repositories {shown}: delete them first (an admin deletes a "
                      "chain's repository with `/backup delete <chain>`; retiring a chain keeps it); nothing was "
                      "removed.")  # fmt: skip
    before = {**_settings(pool), "server_id": pool.server_id}  # type: ignore[attr-defined]
    await pool.delete()
    await record(actor, "pool.remove", "pool", pool.id, before=before)


# -- reading -----------------------------------------------------------------------------------------------------


async def view_of(pool: StoragePool, repositories: Sequence[str] | None = None) -> PoolView:
    """Given a pool row, return its view: address, numbers from :func:`bot.backup.capacity.usage`, repositories."""
    server = await Server.get_or_none(id=pool.server_id) if pool.server_id else None  # type: ignore[attr-defined]
    if repositories is None:
        repositories = await Repository.filter(team_id=pool.team_id, pool_id=pool.id).order_by("name").values_list(
            "name", flat=True)  # fmt: skip
    used = await capacity.usage(pool)
    return PoolView(id=pool.id, name=pool.name, kind=pool.kind.value, host=server.host if server else None,
                    port=server.port if server else None, user=server.username if server else None,
                    server=server.name if server else None, path=pool.base_path, tier=pool.tier.value,
                    free_bytes=used.free_bytes, total_bytes=used.total_bytes, quota_bytes=used.quota_bytes,
                    used_bytes=used.used_bytes, unmeasured=used.unmeasured, repositories=tuple(repositories),
                    measured_at=pool.available_checked_at, alert_threshold_pct=pool.alert_threshold_pct,
                    alert_active=pool.alert_active, measure_error=pool.measure_error,
                    fill_pct=used.fill_pct)  # fmt: skip


async def list_pools(actor: Actor, *, tier: str | None = None) -> list[PoolView]:
    """Given an actor, return the pools they may see, by name: every pool for admins, the ones granted to them
    otherwise (``tier`` narrows to one tier)."""
    query = actor.tenant.query(StoragePool).order_by("name")
    usable = await authz.usable_pool_ids(actor)
    if usable is not None:
        query = query.filter(id__in=sorted(usable))
    if tier:
        query = query.filter(tier=PerformanceTier(_tier(tier)))
    pools = await query
    names: dict[int, list[str]] = {p.id: [] for p in pools}
    rows = await actor.tenant.query(Repository).filter(pool_id__in=list(names)).order_by("name").values_list(
        "pool_id", "name")  # fmt: skip
    for pool_id, repo in rows:
        names[pool_id].append(repo)
    return [await view_of(p, names[p.id]) for p in pools]


async def pool_named(actor: Actor, name: str) -> PoolView:
    """Given an actor and a pool name, return the pool's view if the actor may see it (else NotFound)."""
    for view in await list_pools(actor):
        if view.name == name:
            return view
    raise NotFound(f"There is no storage pool named {str(name)[:100]!r} in this workspace.")


__all__ = ["KEEP", "TIERS", "Measured", "NewPool", "PoolEdit", "PoolTools", "PoolView", "add_pool", "edit_pool",
           "list_pools", "parse_size", "pool_named", "remove_pool", "validated", "view_of"]
