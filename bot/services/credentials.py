"""Database logins stored on a server's behalf: storing one (encrypted) and removing one are an admin's acts.

Using a stored login (backing up with it, testing it) is open to the server's operators; seeing its password is
open to nobody: it is decrypted only to hand it to the database client on the server.

:func:`add_tested` is the way that keeps a password out of Slack (``backup-bot credential add`` on the bot's host):
the login is tested from the server exactly as the wizard tests one, and stored only when it works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from bot import validation
from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.inventory import cached_capabilities, db_credential, ssh_target
from bot.probes import system
from bot.probes.base import ProbeContext
from bot.probes.dbcheck import ENGINE_NAMES, CheckResult, DbCredential, check
from bot.transport import SSHPool
from storage.models import AuthMethod, BackupSource, ChainStatus, DatabaseCredential, DbType, Server, TestStatus

ENGINES = ("mysql", "postgresql", "mongodb")
DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432, "mongodb": 27017}
CHECK_TIMEOUT = 10.0


async def store_login(actor: Actor, server: Server, engine: str, *, host: str, port: int, user: str,
                      password: str) -> DatabaseCredential:  # fmt: skip
    """Given an admin and a login typed for ``server``, return the stored row (the same login typed twice is one
    row). The password never reaches the audit log."""
    await authz.require_admin(actor, "store database logins (choose a saved login)")
    same = actor.tenant.query(DatabaseCredential).filter(server_id=server.id, db_type=engine, host=host, port=port,
                                                         username=user)  # fmt: skip
    for row in await same:
        if row.password is not None and row.password.reveal() == password:
            return row
    row = await actor.tenant.create(DatabaseCredential, server=server, db_type=DbType(engine), host=host, port=port,
                                    username=user, password=password, auth_method=AuthMethod.PASSWORD)  # fmt: skip
    await record(actor, "credential.store", "server", server.id, credential_id=row.id,
                 after={"engine": engine, "login": f"{user}@{host}:{port}"})  # fmt: skip
    return row


async def _chains_using(actor: Actor, credential_id: int) -> list[str]:
    """Names of the chains that back up with this login and still run (retired chains do not: their sources keep
    no hold on it, and a login removed under them is simply forgotten)."""
    names: set[str] = set()
    for source in await actor.tenant.query(BackupSource).filter(credential_id=credential_id).prefetch_related("chains"):
        names.update(chain.name for chain in source.chains if chain.status != ChainStatus.RETIRED)
    return sorted(names)


async def remove_login(actor: Actor, credential_id: object) -> None:
    """Remove a stored login that no running chain uses any more; a refusal names the chains."""
    await authz.require_admin(actor, "remove database logins")
    text = str(credential_id or "")
    row = await actor.tenant.get_or_none(DatabaseCredential, id=int(text)) if text.isdigit() else None
    if row is None:
        raise NotFound(f"There is no stored database login {text[:20]} in this workspace.")
    users = await _chains_using(actor, row.id)
    if users:
        shown = ", ".join(users[:8]) + (f" and {len(users) - 8} more" if len(users) > 8 else "")
        raise Refused(f"The login {row.username}@{row.host}:{row.port} is still used by the chain"
                      f"{'s' if len(users) > 1 else ''} {shown}: delete {'them' if len(users) > 1 else 'it'} "
                      "(`/backup delete <chain>`) or change its login first. Nothing was removed.")  # fmt: skip
    await row.delete()
    await record(actor, "credential.remove", "server", row.server_id,  # type: ignore[attr-defined]
                 credential_id=row.id, before={"engine": row.db_type.value,
                                               "login": f"{row.username}@{row.host}:{row.port}"})  # fmt: skip


async def test_stored(ctx: ProbeContext, row: DatabaseCredential, *, timeout: float = 10.0) -> CheckResult:
    """Connect with a stored login from its server and record the outcome on the row (``test_status``)."""
    result = await check(ctx, db_credential(row), timeout=timeout)
    row.test_status = TestStatus.SUCCESS if result.ok else TestStatus.FAILED
    row.last_test_at = datetime.now(UTC)
    await row.save(update_fields=["test_status", "last_test_at"])
    return result


# -- the command line's way: add a login on the bot host, list, remove ------------------------------------------


@dataclass(frozen=True)
class NewLogin:
    """A login to add, as given on the bot's host (the password only ever in a SecretStr)."""

    server: str  # the server's name (or id)
    engine: str
    user: str
    password: SecretStr
    host: str = "localhost"
    port: int | None = None


@dataclass(frozen=True)
class LoginView:
    """One stored login as a list shows it (never its password)."""

    id: int
    server: str
    engine: str
    login: str  # user@host:port
    test_status: str
    last_test_at: datetime | None
    sources: int  # backup sources using it


async def _server(actor: Actor, ref: object) -> Server:
    """The workspace's server named ``ref`` (or with that id), or NotFound naming the command that lists them."""
    text = str(ref or "").strip()
    found = await actor.tenant.get_or_none(Server, name=text[:100])
    if found is None and text.isdigit():
        found = await actor.tenant.get_or_none(Server, id=int(text))
    if found is None:
        raise NotFound(f"There is no server named {text[:100]!r} in this workspace; `backup-bot server list` shows "
                       "them.")  # fmt: skip
    return found


def _checked(new: NewLogin) -> NewLogin:
    """``new`` with its engine, user, host and port validated (a Refused sentence for the first bad one)."""
    if new.engine not in ENGINES:
        raise Refused(f"{new.engine[:20]!r} is not a database type: give mysql, postgresql or mongodb.")
    user = new.user.strip()
    if not user or len(user) > 100 or any(ch in user for ch in "\x00\n\r"):
        raise Refused(f"Give the {ENGINE_NAMES[new.engine]} user for backups (one line, at most 100 characters).")
    try:
        host = validation.host(new.host or "localhost")
        port = validation.port(new.port or DEFAULT_PORTS[new.engine])
    except validation.InvalidInput as exc:
        raise Refused(str(exc)) from None
    return NewLogin(server=new.server, engine=new.engine, user=user, password=new.password, host=host, port=port)


def probe_context(pool: SSHPool, server: Server) -> ProbeContext:
    """A probe context on ``server``, privileged as its last system probe found (as the wizard's)."""
    base = ProbeContext(pool.transport(ssh_target(server)))
    caps = cached_capabilities(server)
    info = caps.get("system", system.SystemInfo) if caps is not None else None
    return system.context_for(base, info) if info is not None else base


async def add_tested(actor: Actor, new: NewLogin, *, pool: SSHPool) -> tuple[DatabaseCredential, CheckResult]:
    """Given an admin and a login for one of the workspace's servers, test it from that server and store it
    encrypted when it works; return the row and what the test saw. Nothing is stored when it does not work (the
    sentence says why and what to do)."""
    await authz.require_admin(actor, "store database logins")
    server = await _server(actor, new.server)
    new = _checked(new)
    if not server.host_key:
        raise Refused(f"Server {server.name} has no confirmed host key yet: confirm it first (`backup-bot server add "
                      "… --fingerprint SHA256:…`, or in Slack), then add the login.")  # fmt: skip
    typed = DbCredential(engine=new.engine, host=new.host, port=new.port, user=new.user, auth_method="password",
                         password=new.password if new.password.get_secret_value() else None)  # fmt: skip
    result = await check(probe_context(pool, server), typed, timeout=CHECK_TIMEOUT)
    if not result.ok:
        raise Refused(f"{result.message} What to do: {result.fix} Nothing was stored.")
    row = await store_login(actor, server, new.engine, host=new.host, port=int(new.port or 0), user=new.user,
                            password=new.password.get_secret_value())  # fmt: skip
    row.test_status, row.last_test_at = TestStatus.SUCCESS, datetime.now(UTC)
    await row.save(update_fields=["test_status", "last_test_at"])
    return row, result


async def list_logins(actor: Actor, server: object | None = None) -> list[LoginView]:
    """Given an actor, return the stored logins of the servers they may use (admins: all), optionally of one."""
    rows = actor.tenant.query(DatabaseCredential)
    if server is not None:
        rows = rows.filter(server_id=(await _server(actor, server)).id)
    usable = await authz.usable_server_ids(actor)
    if usable is not None:
        rows = rows.filter(server_id__in=sorted(usable))
    found: Sequence[DatabaseCredential] = await rows.order_by("id").prefetch_related("server")
    used = await actor.tenant.query(BackupSource).filter(credential_id__in=[r.id for r in found]).values_list(
        "credential_id", flat=True)  # fmt: skip
    return [LoginView(id=r.id, server=r.server.name, engine=r.db_type.value, login=f"{r.username}@{r.host}:{r.port}",
                      test_status=r.test_status.value, last_test_at=r.last_test_at, sources=used.count(r.id))
            for r in found]  # fmt: skip
