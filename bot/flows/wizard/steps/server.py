"""Step 1 — server: one of the workspace's servers (searched), or a new one added inline.

Who sees what: an admin sees every server of the workspace and may add one; anyone else sees only the servers
granted to them (with a confirmed key) and is told who can grant more (:mod:`bot.services.gate`).

Adding a server never trusts its key by itself, and is an admin's act (:mod:`bot.services.servers`). Submitting a
new host fetches the key it presents (no login happens), creates the Server row as ``unconfirmed`` and stores
``pending_server`` with the key line and its fingerprint; the view then asks the admin to paste the fingerprint
they obtained from the server itself and press *Confirm fingerprint*. Only that button (``act``) pins the key —
when the pasted fingerprint is the presented key's — then probes the server's capabilities and sets
``server_id``; the pin is announced to the admins. Submitting stays refused until the key is confirmed and the
server answers a login with the bot's key; the refusal is the transport's own sentence (unreachable, key refused,
host key changed) with what to do. When the bot's key is refused, an admin is shown the key and the one-line
command that installs it, and a password field for a one-time install (used for that login only, never stored).

A server chosen from the list re-uses its cached capabilities while they are fresh (one hour), after a
quick login that proves the server still answers with the pinned key; older ones are probed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.access import Refused, authz
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.flows.wizard.steps.source_common import (
    SLACK_KEEPS_TYPED,
    SNAPSHOT_KEYS,
    SOURCE_KEYS,
    clip,
    forget,
    human_bytes,
)
from bot.flows.wizard.store import keep_data
from bot.inventory import cached_capabilities, fetch_host_key, refresh_capabilities, ssh_target
from bot.probes import borg, docker_models, mongodb, mysql, postgresql, snapshots, system
from bot.probes.capabilities import Capabilities
from bot.services import gate, servers
from bot.services.servers import NewServer
from bot.transport.base import TransportError
from bot.transport.bootstrap import install_command, install_with_password
from bot.validation import InvalidInput
from bot.validation import host as valid_host
from bot.validation import port as valid_port
from bot.validation import username as valid_username
from storage.models import Server, ServerStatus
from storage.orm import Q
from storage.tenancy import Tenant

FRESH = timedelta(hours=1)  # cached capabilities younger than this are re-used for a listed server
KEY_TIMEOUT = 15.0
CHECK_TIMEOUT = 20.0
MAX_OPTIONS = 100


def _label(server: Server) -> str:
    where = f"{server.username}@{server.host}:{server.port}"
    state = "" if server.status == ServerStatus.OK else f" [{str(server.status.value).replace('_', ' ')}]"
    return clip(f"{server.name} — {where}{state}")


def _pending_label(pending: Mapping[str, Any]) -> str:
    return f"{pending['username']}@{pending['host']}:{pending['port']}"


def _system_problem(caps: Capabilities) -> tuple[str, str] | None:
    """(sentence, transport kind) when the server could not be used, else None."""
    outcome = caps.outcomes.get("system")
    if outcome is None or outcome.ok:
        return None
    return outcome.error or "The server did not answer the system probe.", outcome.transport_kind or ""


def capability_notes(caps: Capabilities) -> list[str]:
    """What was found on the server, in a few lines: OS, borg, databases, Docker, snapshot options."""
    info = caps.get("system", system.SystemInfo)
    if info is None:
        problem = _system_problem(caps)
        return [f":x: {problem[0] if problem else 'The server has not been probed yet.'}"]
    age = datetime.now(UTC) - caps.collected_at
    minutes = max(0, int(age.total_seconds() // 60))
    when = "just now" if minutes < 1 else f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"
    who = "root" if info.is_root else f"{info.user} (passwordless sudo)" if info.sudo == "passwordless" else info.user
    memory = f", {human_bytes(info.memory_bytes)} RAM" if info.memory_bytes else ""
    notes = [
        f"*{info.hostname}* — {info.os_name or info.os_id or 'unknown OS'}, kernel {info.kernel} ({info.arch}), "
        f"{info.cpus or '?'} CPUs{memory}; the bot logs in as {who}. _Probed {when}._"
    ]
    if info.privilege_note:
        notes.append(f":warning: {info.privilege_note}")
    notes.append(_borg_note(caps))
    notes.append(_databases_note(caps))
    notes.append(_docker_note(caps))
    notes.append(_snapshot_note(caps))
    return notes


def _failed(caps: Capabilities, name: str, fallback: str) -> str:
    outcome = caps.outcomes.get(name)
    return (outcome.error if outcome is not None and outcome.error else fallback).rstrip(".")


def _borg_note(caps: Capabilities) -> str:
    found = caps.get("borg", borg.BorgInfo)
    if found is None:
        return f":warning: *borg*: {_failed(caps, 'borg', 'not probed')}."
    if found.supported:
        return f":white_check_mark: *borg*: {found.summary}"
    return f":warning: *borg*: {found.summary} {found.install_hint}"


def _databases_note(caps: Capabilities) -> str:
    found: list[str] = []
    my = caps.get("mysql", mysql.MySQLInfo)
    if my is not None and my.running:
        if my.server is not None:
            flavour = {"mariadb": "MariaDB", "mysql": "MySQL", "percona": "Percona Server"}[my.server.flavour]
            found.append(f"{flavour} {my.server.version} ({len(my.server.databases)} databases)")
        else:
            found.append("MySQL/MariaDB (running, no working login found yet)")
    pg = caps.get("postgresql", postgresql.PgInfo)
    if pg is not None and pg.running:
        if pg.server is not None:
            found.append(f"PostgreSQL {pg.server.version} ({len(pg.server.databases)} databases)")
        else:
            found.append(f"PostgreSQL on port {pg.port} (running, no way in found yet)")
    mongo = caps.get("mongodb", mongodb.MongoInfo)
    if mongo is not None and mongo.running:
        topology = (mongo.topology or "unknown topology").replace("_", " ")
        found.append(f"MongoDB {mongo.version or ''} ({topology})".replace("  ", " "))
    if not found:
        return ":file_cabinet: *Databases*: none found (MySQL/MariaDB, PostgreSQL, MongoDB)."
    return ":file_cabinet: *Databases*: " + ", ".join(found) + "."


def _docker_note(caps: Capabilities) -> str:
    facts = caps.get("docker", docker_models.DockerFacts)
    if facts is None:
        return f":whale: *Docker*: not available — {_failed(caps, 'docker', 'not probed')}."
    running = sum(1 for c in facts.containers if c.running)
    version = facts.version.server_version or facts.version.client_version
    return (
        f":whale: *Docker* {version}: {len(facts.containers)} containers ({running} running), "
        f"{len(facts.volumes)} volumes, {len(facts.databases)} database containers."
    )


def _snapshot_note(caps: Capabilities) -> str:
    found = caps.get("snapshots", snapshots.SnapshotMethods)
    if found is None:
        return f":camera: *Snapshots*: could not be checked — {_failed(caps, 'snapshots', 'not probed')}."
    names = [m.method for m in found.methods if m.available]
    usable = ", ".join(names) if names else "none"
    return f":camera: *Snapshots* of /: {usable}. {found.summary}"


class ServerStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="server", title="Server", slow=True)

    # --- the list --------------------------------------------------------------------------------------------

    async def options(self, ctx: WizardContext, field_name: str, query: str) -> list[Option]:
        if field_name != "server_id":
            return []
        actor = await ctx.actor()
        rows = Tenant(ctx.team_id).query(Server)
        usable = await authz.usable_server_ids(actor)
        if usable is not None:  # not an admin: granted servers with a confirmed key only
            rows = rows.filter(id__in=sorted(usable), host_key__isnull=False)
        text = (query or "").strip()
        if text:
            rows = rows.filter(Q(name__icontains=text) | Q(host__icontains=text))
        found = await rows.order_by("name", "id").limit(MAX_OPTIONS)
        return [Option(str(s.id), _label(s)) for s in found]

    # --- the view --------------------------------------------------------------------------------------------

    async def view(self, ctx: WizardContext) -> StepView:
        actor = await ctx.actor()
        server = None
        if ctx.data.get("server_id") is not None:
            server = await Tenant(ctx.team_id).get_or_none(Server, id=ctx.data["server_id"])
        pending = ctx.data.get("pending_server") if actor.is_admin else None
        notes: list[str] = []
        buttons: list[Button] = []
        fields = [self._select(server)]
        needs_key = False
        if pending:
            notes.append(
                f":key: *{_pending_label(pending)}* presents the host key `{pending['fingerprint']}`. Get the "
                "fingerprint from the server itself — on its console `ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub`, or from its administrator — paste it below and press Confirm "
                "fingerprint: the bot pins the key only if they match, and from then on talks to this server only if "
                "it shows exactly this key."
            )
            fields.append(Field("fingerprint", "Fingerprint from the server itself", "text", optional=True,
                                placeholder="SHA256:…"))  # fmt: skip
            buttons.append(Button("confirm_fingerprint", "Confirm fingerprint", "primary", pending["fingerprint"]))
            needs_key = True
        if server is not None:
            caps = cached_capabilities(server)
            if caps is not None:
                notes.extend(capability_notes(caps))
                problem = _system_problem(caps)
                needs_key = needs_key or (problem is not None and problem[1] == "auth_failed")
            elif server.host_key:
                notes.append("This server has not been probed yet: press Next to connect.")
        if not actor.is_admin:
            return StepView(heading=await self._member_heading(ctx), fields=tuple(fields), notes=tuple(notes))
        notes += self._key_notes(ctx, pending, server, needs_key)
        fields += self._new_fields(pending)
        if needs_key:
            fields.append(Field(
                "password", "Password for a one-time key install", "text", optional=True,
                hint="Only if you cannot run the command above: the login's password, used once to install the "
                     "bot's key (after the fingerprint is confirmed) and never stored by the bot. " + SLACK_KEEPS_TYPED,
            ))  # fmt: skip
        heading = (
            "*Which server do you want to back up?* Pick one of this workspace's servers, or add a new one with "
            "its host name below."
        )
        return StepView(heading=heading, fields=tuple(fields), notes=tuple(notes), buttons=tuple(buttons))

    @staticmethod
    async def _member_heading(ctx: WizardContext) -> str:
        """What a non-admin is told: the servers granted to them, or who can grant one."""
        actor = await ctx.actor()
        if await authz.usable_server_ids(actor):
            return "*Which server do you want to back up?* Pick one of the servers granted to you."
        return (f"*Which server do you want to back up?* No server is granted to you yet, and only admins add "
                f"servers: {await authz.who_can_allow(actor.team_id)} to grant you one.")  # fmt: skip

    @staticmethod
    def _key_notes(ctx: WizardContext, pending: Mapping[str, Any] | None, server: Server | None,
                   needs_key: bool) -> list[str]:  # fmt: skip
        key = ctx.services.bot_public_key.strip() if ctx.services is not None else ""
        if not (needs_key and key):
            return []
        user = pending["username"] if pending else server.username if server else "root"
        return [f":key: If the bot's key is not installed for *{user}* yet, run this on the server as {user} — the "
                f"preferred way: no password goes through Slack:\n```{install_command(key)}```\nThe bot's public key: "
                f"`{key}`"]  # fmt: skip

    @staticmethod
    def _select(server: Server | None) -> Field:
        options = (Option(str(server.id), _label(server)),) if server is not None else ()
        return Field("server_id", "Existing server", "external_select", options=options,
                     initial=str(server.id) if server is not None else None, optional=True,
                     placeholder="Search by name or host…")  # fmt: skip

    @staticmethod
    def _new_fields(pending: Mapping[str, Any] | None) -> list[Field]:
        p = pending or {}
        return [
            Field("host", "New server: host name or IP address", "text", initial=p.get("host"), optional=True,
                  placeholder="db1.example.com"),
            Field("port", "SSH port", "number", initial=str(p.get("port", 22)), optional=True),
            Field("username", "Login user", "text", initial=p.get("username", "root"), optional=True,
                  hint="root, or a user with passwordless sudo."),
            Field("name", "Name in the bot", "text", initial=p.get("name"), optional=True,
                  hint="Defaults to the host name."),
        ]  # fmt: skip

    # --- submit ----------------------------------------------------------------------------------------------

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        tenant = Tenant(ctx.team_id)
        typed = str(values.get("host") or "").strip()
        chosen = str(values.get("server_id") or "").strip()
        password = str(values.get("password") or "")
        if typed:
            errors, new = _parse_new(values)
            if new is None:
                return errors
            existing = await _find(tenant, new.host, new.port, new.username)
            if chosen and (existing is None or str(existing.id) != chosen):
                return {"server_id": "Choose a server from the list or add a new one below, not both: clear the "
                                     "new server's host name or the selection."}  # fmt: skip
            if existing is None or not existing.host_key:
                return await self._propose(ctx, new, existing, "host")
            return await self._use(ctx, existing, "host", password)
        if chosen:
            server = await tenant.get_or_none(Server, id=int(chosen)) if chosen.isdigit() else None
            if server is None:
                return {"server_id": "That server is not in this workspace (any more); choose another one."}
            if not server.host_key:
                spec = NewServer(server.name, server.host, server.port, server.username)
                return await self._propose(ctx, spec, server, "server_id")
            return await self._use(ctx, server, "server_id", password)
        pending = ctx.data.get("pending_server")
        if pending:
            return {"host": f"Confirm the host key fingerprint {pending['fingerprint']} of {_pending_label(pending)} "
                            "with the button first, then press Next."}  # fmt: skip
        return {"server_id": "Choose one of this workspace's servers, or add a new one by its host name."}

    async def _propose(self, ctx: WizardContext, new: NewServer, existing: Server | None, field: str) -> Errors:
        """Fetch the key the server presents, record the server as unconfirmed and ask for confirmation (admins)."""
        try:
            server, info = await servers.propose(await ctx.actor(), new, existing, timeout=KEY_TIMEOUT)
        except Refused as exc:
            return {"name" if "already exists" in exc.sentence else field: exc.sentence}
        except TransportError as exc:
            return {"port" if "refused" in str(exc) and field == "host" else field: str(exc)}
        ctx.data["pending_server"] = {
            "host": new.host, "port": new.port, "username": new.username,
            "name": server.name, "key_line": info.key_line, "fingerprint": info.fingerprint,
        }  # fmt: skip
        await keep_data(ctx)
        return {field: f"{new.host}:{new.port} presents the host key {info.fingerprint} ({info.key_type}). Paste the "
                       "fingerprint you got from the server itself and press Confirm fingerprint; then press "
                       "Next."}  # fmt: skip

    async def _use(self, ctx: WizardContext, server: Server, field: str, password: str) -> Errors:
        """Accept ``server`` once the actor may use it and it answers a login with the bot's key (re-using fresh
        capabilities)."""
        services = ctx.services
        actor = await ctx.actor()
        try:
            await gate.check_server(actor, server)
            if password:
                await authz.require_admin(actor, "install the bot's key on a server")
        except Refused as exc:
            return {field: exc.sentence}
        if password:
            problem = await _install_key(ctx, server, password)
            del password
            if problem is not None:
                return {"password": problem}
        caps = cached_capabilities(server, max_age=FRESH) if server.status == ServerStatus.OK else None
        problem: tuple[str, str] | None = None
        if caps is not None and _system_problem(caps) is None:
            try:
                await services.pool.transport(ssh_target(server)).run(["true"], timeout=CHECK_TIMEOUT)
            except TransportError:
                caps = None  # probe again: that records the server's status and raises the alerts
        if caps is None or _system_problem(caps) is not None:
            caps = await refresh_capabilities(server, services.pool, services.specs, alerts=services.alerts)
            problem = _system_problem(caps)
        _switch(ctx, server.id)
        if problem is None:
            ctx.data.pop("pending_server", None)
            return {}
        sentence, kind = problem
        if kind == "host_key_changed":
            sentence += await _offer_repin(ctx, server)
        await keep_data(ctx)
        return {field: sentence}

    # --- the confirmation button -----------------------------------------------------------------------------

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        if action != "confirm_fingerprint":
            return None
        pending = ctx.data.get("pending_server")
        if not pending:
            return "There is no host key waiting for confirmation: add the server (or choose it) and press Next."
        if value and value != pending["fingerprint"]:
            return (f":warning: The key shown when you pressed the button ({value}) is not the one waiting now "
                    f"({pending['fingerprint']}); nothing was pinned. Check the one shown now.")  # fmt: skip
        actor = await ctx.actor()
        tenant = Tenant(ctx.team_id)
        server = await _find(tenant, pending["host"], int(pending["port"]), pending["username"])
        if server is None:
            return "That server was removed meanwhile; add it again."
        try:
            await servers.confirm_key(actor, server, pending["key_line"], str(ctx.form.get("fingerprint") or ""),
                                      alerts=ctx.services.alerts)  # fmt: skip
        except Refused as exc:
            return f":warning: {exc.sentence}"
        ctx.data.pop("pending_server", None)
        _switch(ctx, server.id)
        services = ctx.services
        caps = await refresh_capabilities(server, services.pool, services.specs, alerts=services.alerts)
        pinned = f"Host key {pending['fingerprint']} pinned for {_pending_label(pending)}"
        problem = _system_problem(caps)
        if problem is None:
            return f":white_check_mark: {pinned}; the server answered and was probed (below). Press Next."
        return f":lock: {pinned}, but the bot cannot use the server yet: {problem[0]}"


def _parse_new(values: Mapping[str, Any]) -> tuple[Errors, NewServer | None]:
    errors: Errors = {}
    checked: dict[str, Any] = {}
    for field, check, default in (("host", valid_host, ""), ("port", valid_port, "22"),
                                  ("username", valid_username, "root")):  # fmt: skip
        raw = values.get(field)
        raw = default if raw is None or str(raw).strip() == "" else raw
        try:
            checked[field] = check(raw)
        except InvalidInput as exc:
            errors[field] = str(exc)
    name = str(values.get("name") or "").strip() or checked.get("host", "")
    if len(name) > 100 or any(ch in name for ch in "\x00\n\r"):
        errors["name"] = "A name must be one line of at most 100 characters."
    if errors:
        return errors, None
    return {}, NewServer(name=name, host=checked["host"], port=checked["port"], username=checked["username"])


async def _find(tenant: Tenant, host: str, port: int, username: str) -> Server | None:
    return await tenant.query(Server).filter(host=host, port=port, username=username).order_by("id").first()


def _switch(ctx: WizardContext, server_id: int) -> None:
    """Make ``server_id`` the chosen server; answers that belonged to another server are dropped."""
    if ctx.data.get("server_id") not in (None, server_id):
        forget(ctx.data, (*SOURCE_KEYS, *SNAPSHOT_KEYS))
    ctx.data["server_id"] = server_id


async def _install_key(ctx: WizardContext, server: Server, password: str) -> str | None:
    """Install the bot's key with one password login; the sentence of what went wrong, or None."""
    key = ctx.services.bot_public_key.strip()
    if not key:
        return "The bot's public key is not configured, so it cannot be installed; ask the bot's administrator."
    try:
        await install_with_password(ssh_target(server), password, key)
    except TransportError as exc:
        return str(exc)
    return None


async def _offer_repin(ctx: WizardContext, server: Server) -> str:
    """After a changed host key: an admin is shown the new key to confirm (re-pinning needs the same confirmation
    as a first pin); anyone else is told who can."""
    actor = await ctx.actor()
    if not actor.is_admin:
        return f" Only admins can re-pin a host key — {await authz.who_can_allow(actor.team_id)}."
    try:
        info = await fetch_host_key(server.host, server.port, timeout=KEY_TIMEOUT)
    except TransportError:
        return ""
    ctx.data["pending_server"] = {
        "host": server.host, "port": server.port, "username": server.username, "name": server.name,
        "key_line": info.key_line, "fingerprint": info.fingerprint,
    }  # fmt: skip
    return (f" It now presents {info.fingerprint}: only if its administrator confirms that this is the new key, "
            "paste the fingerprint they give you and press Confirm fingerprint to re-pin it.")  # fmt: skip
