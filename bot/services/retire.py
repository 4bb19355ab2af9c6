"""Retiring a chain (``/backup delete <chain>``), and deleting its repository too.

* **Retire** (who may operate the chain): the chain row stays with status ``retired`` and ``retired_at``, renamed
  ``"<name> (retired YYYY-MM-DD)"`` so its name is free for a new chain at once; its queued runs are cancelled and
  its pending approvals closed, and the scheduler forgets it (its repository's prune schedule too: prunes run only
  for repositories of active chains). Its repository — row, directory, passphrase, push key — stays as it was, so
  its archives are still listed (``/backup archives``) and restorable. Nothing is contacted.
* **Delete the repository too** (admins only, confirmed by typing the chain's name, its old name for a chain
  already retired): the chain is retired as above first, then on the pool side the source's push key line leaves
  the pool login's ``authorized_keys`` (:func:`bot.backup.repository.tear_down_access`, which also removes the key
  from each source server), the repository directory is removed through the pool's own transport — only a
  directory directly below the pool's base path, never anything else — then the rows (chain, its runs, the
  repository, sources no other chain uses). A failure on a server leaves the rows, says what is left, and the same
  command finishes the job later.

Refused while a run of the chain (or, to delete the repository, of the repository) is running: retiring under a
running backup would report a run of a chain that no longer exists, and deleting under it would break it midway.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, Forbidden, Refused, authz
from bot.access.audit import record
from bot.backup import plan as planning
from bot.backup.repository import KEY_DIR, RepoSpec, tear_down_access
from bot.borg.repo import STATE_ROOT, state_key
from bot.mrkdwn import esc
from bot.runs.nudge import schedule_changed
from bot.transport.base import Transport, TransportError
from storage.models import (
    Approval,
    ApprovalStatus,
    BackupChain,
    BackupSource,
    ChainStatus,
    PoolKind,
    Repository,
    Run,
    RunStatus,
    Server,
    StoragePool,
)
from storage.orm import in_transaction

MAX_NAME = 100
_RETIRED = re.compile(r" \(retired \d{4}-\d{2}-\d{2}\)( #\d+)?$")
PUSH_MARK = "backup-bot:"  # bot.backup.repository's authorized_keys comment prefix (the marker is this + path)
REMOTE_TIMEOUT = 60.0
# $1 = marker: how many lines of the login's authorized_keys end with it (0 when the file is missing).
_COUNT_KEY = ('f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || { echo 0; exit 0; }; '
              'awk -v m="$1" \'length($0) >= length(m) && substr($0, length($0) - length(m) + 1) == m {n++} '
              'END {print n+0}\' "$f"')  # fmt: skip
_RM_STATE = 'rm -rf -- "${HOME:?}/$1"'


@dataclass(frozen=True)
class Retired:
    """What retiring did: the chain's old and new names, the runs cancelled, and the sentence for the person."""

    chain_id: int
    name: str
    retired_name: str
    repository: str
    cancelled_runs: int
    already: bool
    sentence: str


@dataclass(frozen=True)
class Deleted:
    """What deleting the repository did: ``removed`` (said to the person and audited), ``left`` (not removed, with
    why); ``complete`` when the rows are gone too."""

    chain_name: str
    repository: str
    path: str
    removed: tuple[str, ...]
    left: tuple[str, ...]
    complete: bool
    sentence: str


# -- finding the chain -----------------------------------------------------------------------------------------


def original_name(name: str) -> str:
    """Given a chain's name, return it without the ``(retired …)`` suffix retiring added (the name people knew)."""
    return _RETIRED.sub("", name)


async def find_chain(actor: Actor, ref: int | str) -> BackupChain:
    """Given a chain id (buttons) or name (``/backup delete``), return the actor's workspace's chain."""
    return await authz.find_chain(actor, ref, "delete")


async def operable(actor: Actor, ref: int | str, action: str) -> BackupChain:
    """The chain, once the actor may operate it (its creator, the operators of its servers, admins); a refusal is
    audited and raised before anything changes."""
    chain = await find_chain(actor, ref)
    if not await authz.may_operate(actor, chain):
        await record(actor, action, "chain", chain.id, outcome="denied")
        raise await _not_allowed(actor, chain)
    return chain


async def _not_allowed(actor: Actor, chain: BackupChain) -> Refused:
    return Forbidden(f"You are not allowed to delete {chain.name}: only its creator, the operators of its server and "
                     f"admins may — {await authz.who_can_allow(actor.team_id)}. Nothing was changed.")  # fmt: skip


# -- retiring --------------------------------------------------------------------------------------------------


async def _free_name(actor: Actor, name: str, day: datetime) -> str:
    """Given a chain's name, return ``"<name> (retired YYYY-MM-DD)"`` (with `` #n`` when taken), at most 100
    characters, so the old name is free for a new chain and the retired one is still recognisable."""
    for n in range(1, 1000):
        suffix = f" (retired {day:%Y-%m-%d})" + (f" #{n}" if n > 1 else "")
        candidate = name[: MAX_NAME - len(suffix)].rstrip() + suffix
        if not await actor.tenant.query(BackupChain).filter(name=candidate).exists():
            return candidate
    raise Refused(f"{name} cannot be given a free retired name; rename it first.")  # pragma: no cover


async def _running(actor: Actor, chain: BackupChain, *, repository: bool) -> Run | None:
    """The run of the chain (or, with ``repository``, of its repository) that is running now, if any."""
    query = actor.tenant.query(Run).filter(status=RunStatus.RUNNING)
    found = await query.filter(chain_id=chain.id).order_by("id").first()
    if found is None and repository:
        found = await query.filter(repository_id=chain.repository_id).order_by("id").first()  # type: ignore[attr-defined]
    return found


async def _stop_pending(actor: Actor, chain: BackupChain, *, repository: bool) -> int:
    """Cancel the chain's queued runs (and its repository's, with ``repository``) and close its pending approvals;
    returns how many runs were cancelled. Conditional updates: a worker claiming a run at the same instant either
    got it first (then it is running and the caller refuses) or finds it cancelled."""
    now = datetime.now(UTC)
    why = "The chain was retired before this run started."
    queued = actor.tenant.query(Run).filter(status=RunStatus.QUEUED)
    count = await queued.filter(chain_id=chain.id).update(status=RunStatus.CANCELLED, error=why, finished_at=now)
    if repository:
        count += await queued.filter(repository_id=chain.repository_id).update(  # type: ignore[attr-defined]
            status=RunStatus.CANCELLED, error=why, finished_at=now)
    await actor.tenant.query(Approval).filter(chain_id=chain.id, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.REJECTED, decided_by=actor.user_id[:32], decided_at=now, reason="The chain was retired.")
    return count


async def _retire_rows(actor: Actor, chain: BackupChain, *, repository: bool) -> tuple[str, int]:
    """In one transaction: refuse while a run is running, cancel what waits, mark the chain retired and renamed.
    Returns (new name, runs cancelled)."""
    now = datetime.now(UTC)
    async with in_transaction():
        cancelled = await _stop_pending(actor, chain, repository=repository)
        running = await _running(actor, chain, repository=repository)
        if running is not None:
            raise Refused(f"{chain.name} has a {running.kind.value} run (#{running.id}) running now: wait until it "
                          "ends, then delete the chain. Nothing was changed.")  # fmt: skip
        if chain.status == ChainStatus.RETIRED:
            return chain.name, cancelled
        new_name = await _free_name(actor, chain.name, now)
        changed = await actor.tenant.query(BackupChain).filter(id=chain.id, status=chain.status).update(
            status=ChainStatus.RETIRED, retired_at=now, name=new_name)
        if not changed:
            raise Refused(f"{chain.name} changed while you were deleting it: look at it again. Nothing was changed.")
    return new_name, cancelled


async def retire(actor: Actor, ref: int | str) -> Retired:
    """Given an actor who may operate the chain ``ref``, retire it (see the module docstring), keeping its
    repository; audited. A chain already retired is reported as such (nothing changes)."""
    chain = await operable(actor, ref, "chain.retire")
    repository = await actor.tenant.get(Repository, id=chain.repository_id)  # type: ignore[attr-defined]
    already = chain.status == ChainStatus.RETIRED
    new_name, cancelled = await _retire_rows(actor, chain, repository=False)
    if not already:
        await record(actor, "chain.retire", "chain", chain.id, outcome="done", cancelled_runs=cancelled,
                     repository={"id": repository.id, "name": repository.name, "kept": True},
                     before={"name": chain.name, "status": chain.status.value},
                     after={"name": new_name, "status": ChainStatus.RETIRED.value})  # fmt: skip
        await schedule_changed(chain.id)
    return Retired(chain.id, chain.name, new_name, repository.name, cancelled, already,
                   _retire_sentence(chain.name, new_name, repository.name, cancelled, already))  # fmt: skip


def _retire_sentence(name: str, new_name: str, repository: str, cancelled: int, already: bool) -> str:
    if already:
        return (f"*{esc(name)}* is already retired; its repository {esc(repository)} is kept. An admin can delete "
                "the repository too from `/backup delete`.")  # fmt: skip
    runs = f" {cancelled} queued run{'s' if cancelled != 1 else ''} cancelled." if cancelled else ""
    return (f":wastebasket: *{esc(name)}* is retired: no more runs.{runs} Its repository {esc(repository)} is kept, "
            f"so its archives stay listed (`/backup archives {esc(new_name)}`) and restorable; the chain is now "
            f"called *{esc(new_name)}* and its old name is free.")  # fmt: skip


# -- deleting the repository -----------------------------------------------------------------------------------


def _typed_ok(chain: BackupChain, typed: str) -> bool:
    text = (typed or "").strip()
    return bool(text) and text in {chain.name, original_name(chain.name)}


def safe_path(pool: StoragePool, path: str) -> str:
    """Given a pool and a repository path, return the path when it is a directory directly below the pool's base
    path (the only kind of directory the bot ever created there); refuse anything else (the base itself, ``..``,
    a path elsewhere on the host)."""
    base = posixpath.normpath(pool.base_path or "")
    normal = posixpath.normpath(path or "")
    leaf = posixpath.basename(normal)
    if (not base.startswith("/") or not normal.startswith("/") or posixpath.dirname(normal) != base
            or leaf in ("", ".", "..") or normal != (path or "").rstrip("/")):  # fmt: skip
        raise Refused(f"The repository path {str(path)[:200]} is not a directory directly below the pool's base path "
                      f"{str(pool.base_path)[:200]}, so the bot will not remove it: remove it by hand if it must go. "
                      "Nothing was deleted.")  # fmt: skip
    return normal


async def _sharing(actor: Actor, chain: BackupChain) -> list[str]:
    """Names of the other chains (retired ones too) whose repository is this chain's."""
    rows = actor.tenant.query(BackupChain).filter(repository_id=chain.repository_id).exclude(id=chain.id)  # type: ignore[attr-defined]
    return sorted(await rows.values_list("name", flat=True))


async def _checked_for_delete(actor: Actor, ref: int | str, typed: str) -> tuple[BackupChain, Repository, str]:
    """Every refusal of a repository deletion, before anything changes: admins only, the typed name, other
    chains on the same repository, a path the bot may remove."""
    if not actor.is_admin:
        chain = await find_chain(actor, ref)
        await record(actor, "repository.delete", "chain", chain.id, outcome="denied")
        await authz.require_admin(actor, "delete a chain's repository (its archives are lost for good)")
    chain = await find_chain(actor, ref)
    if not _typed_ok(chain, typed):
        await record(actor, "repository.delete", "chain", chain.id, outcome="wrong_name")
        raise Refused(f"The name you typed ({str(typed or '').strip()[:100]!r}) is not the chain's: type "
                      f"{original_name(chain.name)} exactly to delete its repository. Nothing was deleted.")
    repository = await actor.tenant.query(Repository).filter(id=chain.repository_id).select_related(  # type: ignore[attr-defined]
        "pool__server").first()
    assert repository is not None  # the foreign key is RESTRICT
    others = await _sharing(actor, chain)
    if others:
        raise Refused(f"The repository {repository.name} is also the repository of {', '.join(others[:5])}: delete "
                      "those chains' repository from the last of them. Nothing was deleted.")  # fmt: skip
    return chain, repository, safe_path(repository.pool, repository.path)


async def check_delete(actor: Actor, ref: int | str, typed: str) -> None:
    """Given a deletion request, raise its refusal (audited) without changing anything: lets a form show a wrong
    name inline before the slow part starts. :func:`delete_repository` checks again."""
    await _checked_for_delete(actor, ref, typed)


async def delete_repository(actor: Actor, ref: int | str, typed: str, *, services: Any) -> Deleted:
    """Given an admin, a chain and its name typed as confirmation, retire the chain and delete its repository:
    the push access on both sides, the directory on the pool, then the rows; audited with what was removed.
    ``services``: the bot's SSH pool (``pool``) and ``borg``. A server that fails leaves the rows in place and the
    answer says what is left (running it again finishes)."""
    chain, repository, path = await _checked_for_delete(actor, ref, typed)
    name = original_name(chain.name)
    new_name, cancelled = await _retire_rows(actor, chain, repository=True)
    await schedule_changed(chain.id)
    pool = repository.pool
    removed, left, notes = await _remove_remote(chain, repository, pool, path, services)
    complete = not left
    if complete:
        await _delete_rows(actor, chain, repository)
        removed.append("the chain, its runs and the repository's rows")
    await record(actor, "repository.delete", "repository", repository.id, outcome="done" if complete else "partial",
                 chain={"id": chain.id, "name": name}, pool=pool.name, path=path, cancelled_runs=cancelled,
                 removed=removed, left=left, notes=notes, before={"chain": chain.name, "status": chain.status.value,
                                                     "repository": repository.name})  # fmt: skip
    sentence = _delete_sentence(name, new_name, repository.name, path, pool.name, removed, left)
    sentence += "".join(f" Note: {esc(note)}." for note in notes)
    return Deleted(name, repository.name, path, tuple(removed), tuple(left), complete, sentence)


def _delete_sentence(name: str, new_name: str, repository: str, path: str, pool: str, removed: list[str],
                     left: list[str]) -> str:  # fmt: skip
    if not left:
        return (f":wastebasket: *{esc(name)}* is gone with its repository {esc(repository)}: removed "
                f"{esc('; '.join(removed))}.")  # fmt: skip
    return (f":warning: *{esc(name)}* is retired (now *{esc(new_name)}*), but its repository {esc(repository)} on "
            f"{esc(pool)} (`{esc(path)}`) could not be removed completely: {esc('; '.join(left))}. Removed so far: "
            f"{esc('; '.join(removed) or 'nothing')}. Fix that, then delete it again from `/backup delete "
            f"{esc(new_name)}`.")  # fmt: skip


async def _sources(chain: BackupChain) -> list[Server]:
    """The distinct servers of the chain's sources (where its push key was written)."""
    servers: dict[int, Server] = {}
    for source in await chain.sources.all().select_related("server"):
        servers.setdefault(source.server.id, source.server)
    return list(servers.values())


async def _key_lines(transport: Transport, path: str) -> int:
    result = await transport.run(["sh", "-c", _COUNT_KEY, "sh", f"{PUSH_MARK}{path}"], timeout=REMOTE_TIMEOUT)
    if not result.ok:
        raise TransportError(f"reading authorized_keys failed: {result.describe_failure()}")
    return int(result.out.strip() or 0)


async def _source_key_gone(server: Server, name: str, services: Any) -> bool:
    """Whether the push key directory of repository ``name`` is gone from ``server`` (False when unreachable)."""
    try:
        gone = await planning.source_transport(server, services).run(
            ["sh", "-c", 'test ! -e "$HOME/$1"', "sh", f"{KEY_DIR}/{name}"], timeout=REMOTE_TIMEOUT)
    except TransportError:
        return False
    return gone.ok


async def _revoke_push(chain: BackupChain, repository: Repository, pool: StoragePool, path: str,
                       services: Any) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """Remove the push key's line from the pool login's authorized_keys (checked after) and the key from each
    source server; returns (removed, left, notes). A source that cannot be reached keeps its (now useless) key file: it
    is named in ``notes`` only, since with the pool's line gone the key opens nothing."""
    removed: list[str] = []
    notes: list[str] = []
    access = planning.pool_access(pool, services)
    spec = RepoSpec(name=repository.name, base_path=pool.base_path)
    for server in await _sources(chain):
        await tear_down_access(planning.source_transport(server, services), access, spec)
        if await _source_key_gone(server, repository.name, services):
            removed.append(f"the push key on {server.name}")
        else:
            notes.append(f"the push key on {server.name} could not be removed (remove ~/{KEY_DIR}/{repository.name} "
                         "there by hand; it opens nothing any more)")  # fmt: skip
    line = f"the push key's line in {pool.name}'s authorized_keys"
    if await _key_lines(access.transport, path):
        return removed, [line], notes
    return [line, *removed], [], notes


async def _remove_directory(transport: Transport, pool: StoragePool, path: str) -> tuple[list[str], list[str]]:
    """Remove the repository directory (checked to be a borg repository, or gone already) and the bot's borg state
    for it on the pool; returns (removed, left)."""
    present = await transport.run(["test", "-e", path], timeout=REMOTE_TIMEOUT)
    if not present.ok:
        return [f"nothing at {path} on {pool.name} (it was gone already)"], []
    is_repo = await transport.run(["test", "-f", f"{path}/config"], timeout=REMOTE_TIMEOUT)
    if not is_repo.ok:
        return [], [f"{path} on {pool.name} is not a borg repository, so the bot left it"]
    done = await transport.run(["rm", "-rf", "--", path], timeout=REMOTE_TIMEOUT * 10)
    still = await transport.run(["test", "-e", path], timeout=REMOTE_TIMEOUT)
    if not still.ok:
        await transport.run(["sh", "-c", _RM_STATE, "sh", f"{STATE_ROOT}/{state_key(path)}"], timeout=REMOTE_TIMEOUT)
        return [f"the repository directory {path} on {pool.name}"], []
    return [], [f"the directory {path} on {pool.name} ({done.describe_failure()})"]


async def _remove_remote(chain: BackupChain, repository: Repository, pool: StoragePool, path: str,
                         services: Any) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """Revoke the push access (SSH pools), then remove the directory; returns (removed, left, notes). A server
    that cannot be reached is a sentence in ``left``, never an exception."""
    removed: list[str] = []
    left: list[str] = []
    notes: list[str] = []
    try:
        if pool.kind != PoolKind.LOCAL:
            removed, left, notes = await _revoke_push(chain, repository, pool, path, services)
        if not left:  # the directory goes only once no key can write to it any more
            more, still = await _remove_directory(planning.pool_transport(pool, services), pool, path)
            removed += more
            left += still
    except TransportError as exc:
        left.append(f"{pool.name} could not be reached ({exc})")
    return removed, left, notes


async def _delete_rows(actor: Actor, chain: BackupChain, repository: Repository) -> None:
    """The chain (its runs and approvals cascade), the sources no other chain uses, the repository."""
    source_ids = [s.id for s in await chain.sources.all()]
    async with in_transaction():
        await actor.tenant.query(Run).filter(repository_id=repository.id).delete()
        await actor.tenant.query(BackupChain).filter(id=chain.id).delete()
        for source_id in source_ids:
            if not await actor.tenant.query(BackupChain).filter(sources__id=source_id).exists():
                await actor.tenant.query(BackupSource).filter(id=source_id).delete()
        await actor.tenant.query(Repository).filter(id=repository.id).delete()


__all__ = ["Deleted", "Retired", "check_delete", "delete_repository", "find_chain", "operable", "original_name",
           "retire", "safe_path"]  # fmt: skip
