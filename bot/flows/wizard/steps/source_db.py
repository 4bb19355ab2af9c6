"""Source form for MySQL/MariaDB, PostgreSQL and MongoDB: databases, the login, and the consistency verdict.

Prefilled from the capabilities probe: the databases it listed and the login it found (``debian.cnf``,
``~/.my.cnf``, root through the socket; peer as ``postgres``, ``~/.pgpass``; no login where MongoDB runs
without access control). A login typed in is saved at once as an encrypted DatabaseCredential row (only its
id goes into the session) and tested from the server with :func:`bot.probes.dbcheck.check`; a failed test
refuses the step with the client's precise reason and what to do. *Test connection* tests the login the form
shows as chosen (a detected one by probing again, a saved one with the connectivity check).

Ways that keep a password out of Slack come first (Slack keeps what is typed in a modal): a login the probe detected
on the server, and ``backup-bot credential add`` on the bot's host (the exact command is shown, prefilled), whose
login then appears under the saved ones; *Look for logins again* probes the server anew after someone set up a
socket login, ``~/.my.cnf`` or ``~/.pgpass``. The password input that remains says that Slack stores what is typed.

The atomicity verdict (:mod:`bot.probes.atomicity`) is computed on Next for the databases chosen — for MySQL
with the snapshot method of the data directory when non-transactional tables need one — stored as
``atomicity`` and shown with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bot.access import Refused
from bot.backup import sources
from bot.flows.wizard.steps.base import Button, Errors, Field, Option, WizardContext
from bot.flows.wizard.steps.source_common import (
    SLACK_KEEPS_TYPED,
    Part,
    clip,
    credential_add_command,
    errors_from,
    human_bytes,
    lines_of,
    probe_context,
)
from bot.flows.wizard.steps.source_files import previous
from bot.flows.wizard.store import keep_data
from bot.inventory import db_credential, refresh_capabilities
from bot.probes import atomicity, dbcheck, disk, mongodb, mysql, postgresql, snapshots
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.capabilities import Capabilities
from bot.services import credentials, gate
from bot.transport.base import TransportError
from bot.validation import InvalidInput
from bot.validation import host as valid_host
from bot.validation import port as valid_port
from storage.models import DatabaseCredential, Server
from storage.tenancy import Tenant

NAMES = dbcheck.ENGINE_NAMES
MODELS: dict[str, Any] = {"mysql": mysql.MySQLInfo, "postgresql": postgresql.PgInfo, "mongodb": mongodb.MongoInfo}
DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432, "mongodb": 27017}
ALL = "all"  # option value: every database, also ones created later (the config's empty list)
DB = "db:"  # option value prefix of one database
DETECTED, NEW, STORED = "detected", "new", "stored:"
MAX_STORED = 8  # radio buttons: at most 10 options
CHECK_TIMEOUT = 10.0
SIZE_LIMIT = 10.0  # seconds du may measure the data directory
FLAGS = {
    "mysql": ("lock_non_transactional", "Lock non-transactional tables during their dump",
              "MyISAM/Aria…: writes to them wait; otherwise they may be inconsistent"),
    "postgresql": ("include_globals", "Include roles and tablespaces", "pg_dumpall --globals-only"),
}  # fmt: skip
ADMIN_FLAGS = ("lock_non_transactional",)  # disruptive: on by default for admins only, who alone may set it
CONFIG_FIELDS = {"databases": "databases", "exclude": "databases", "lock_non_transactional": "flags",
                 "include_globals": "flags"}  # fmt: skip


def engine_info(caps: Capabilities | None, engine: str) -> Any:
    return caps.get(engine, MODELS[engine]) if caps is not None else None


def detected_login(engine: str, info: Any) -> str | None:
    """The login the probe found and that works, in words; None when there is none."""
    if info is None:
        return None
    if engine == "mysql":
        found = info.credential
        if found is None or info.server is None:
            return None
        user = found.user or "the default user"
        return {
            "debian.cnf": f"the login in /etc/mysql/debian.cnf ({user})",
            "my.cnf": f"the login in ~/.my.cnf ({user})",
            "socket": "root through the local socket, no password (unix_socket)",
        }.get(found.source, f"{user} at {found.where}")
    if engine == "postgresql":
        access = info.access
        if access is None or info.server is None:
            return None
        if access.method == "peer":
            return "peer authentication as the postgres system user"
        return f"the ~/.pgpass entry for {access.user}@{access.host}"
    if info.running and info.auth_required is False:
        return "no login: access control is off on this MongoDB"
    return None


def detected_databases(engine: str, info: Any) -> list[str] | None:
    if info is None:
        return None
    if engine in ("mysql", "postgresql"):
        return list(info.server.databases) if info.server is not None else None
    if info.running and (info.databases or info.auth_required is False):
        return [d.name for d in info.databases]
    return None


def datadir_of(engine: str, info: Any) -> str | None:
    if info is None:
        return None
    if engine == "mysql":
        return info.server.datadir if info.server is not None else None
    if engine == "postgresql":
        return info.data_directory
    return None


async def stored_logins(ctx: WizardContext, server: Server, engine: str) -> list[DatabaseCredential]:
    rows = Tenant(ctx.team_id).query(DatabaseCredential).filter(server_id=server.id, db_type=engine)
    return list(await rows.order_by("-id").limit(MAX_STORED))


def _who(user: str, host: str, port: int) -> str:
    """How a login is named on screen: ``user@host:port``."""
    return f"{user}@{host}:{port}"


def _row_label(row: DatabaseCredential) -> str:
    return clip(f"Saved: {_who(row.username, row.host, row.port)}")


def _initial_choice(ctx: WizardContext, detected: str | None, rows: Sequence[DatabaseCredential]) -> str:
    ids = {r.id for r in rows}
    if "credential_id" in ctx.data:
        chosen = ctx.data["credential_id"]
        if chosen is None and detected:
            return DETECTED
        if chosen in ids:
            return f"{STORED}{chosen}"
    if detected:
        return DETECTED
    return f"{STORED}{rows[0].id}" if rows else NEW


def _known(ctx: WizardContext, engine: str, info: Any, choice: str) -> list[str] | None:
    """The databases the chosen login sees: from its last successful test, else from the probe."""
    found = ctx.data.get("_source_found")
    if isinstance(found, dict) and found.get("engine") == engine:
        login = DETECTED if found.get("credential_id") is None else f"{STORED}{found.get('credential_id')}"
        if login == choice and found.get("databases") is not None:
            return list(found["databases"])
    return detected_databases(engine, info)


def _databases_field(engine: str, known: list[str] | None, stored: Mapping[str, Any] | None) -> Field:
    picked = list(stored["databases"]) if stored else []
    label_all = "Whole instance (all databases)" if engine == "mongodb" else "All databases (also ones created later)"
    if known is not None and len(known) <= 99:
        options = (Option(ALL, label_all), *(Option(DB + name, clip(name)) for name in known))
        initial = [DB + name for name in picked] if picked else [ALL]
        return Field("databases", "Databases to back up", "multiselect", options=options, initial=initial)
    hint = "The databases are listed once a login works." if known is None else f"{len(known)} databases found."
    return Field("databases", "Databases to back up (one per line, * for all)", "multiline",
                 initial="\n".join(picked) if picked else "*", hint=hint)  # fmt: skip


def _flag_default(engine: str, admin: bool) -> bool:
    return admin or FLAGS[engine][0] not in ADMIN_FLAGS


def _flags_field(engine: str, stored: Mapping[str, Any] | None, admin: bool) -> Field | None:
    if engine not in FLAGS:
        return None
    name, label, description = FLAGS[engine]
    on = stored.get(name, True) if stored else _flag_default(engine, admin)
    return Field("flags", "Options", "checkboxes", options=(Option(name, label, description),),
                 initial=[name] if on else [], optional=True)  # fmt: skip


def _login_fields(engine: str, info: Any) -> list[Field]:
    port = info.port if engine == "postgresql" and info is not None else DEFAULT_PORTS[engine]
    return [
        Field("db_user", "New login: user", "text", optional=True),
        Field("db_password", "New login: password", "text", optional=True,
              hint="Saved encrypted as soon as you press Next, tested from the server, never shown again by the bot. "
                   + SLACK_KEEPS_TYPED),
        Field("db_host", "New login: host", "text", initial="localhost", optional=True,
              hint="As seen from the server: localhost when the database runs there."),
        Field("db_port", "New login: port", "number", initial=str(port), optional=True),
    ]  # fmt: skip


DETECTABLE = {
    "mysql": "root through the local socket (unix_socket), /etc/mysql/debian.cnf, or a ~/.my.cnf of the bot's login "
             "user",
    "postgresql": "peer authentication as the postgres system user, or a ~/.pgpass entry of the bot's login user",
    "mongodb": "a local MongoDB without access control",
}  # fmt: skip


def _secret_free_note(ctx: WizardContext, server: Server, engine: str, info: Any, detected: str | None) -> str:
    """The ways to log in that keep the password out of Slack, before the form's password input."""
    if detected:
        found = f"• Detected on the server: {detected} — nothing to type."
    else:
        found = (f"• Detected on the server: none yet. The bot looks for {DETECTABLE[engine]}; set one up there, then "
                 "press *Look for logins again*.")  # fmt: skip
    port = info.port if engine == "postgresql" and info is not None else DEFAULT_PORTS[engine]
    command = credential_add_command(ctx.team_id, server.name, engine, port=port)
    return (f":key: *Logins that keep the password out of Slack* (preferred):\n{found}\n• Added on the bot's host "
            f"(an admin at its shell, asked for the password without echo; it is tested from {server.name} and stored "
            f"encrypted):\n```{command}```\nthen press *Test connection*: it is listed as a saved login.\nA password "
            "typed under *A new login* works too, but Slack keeps what is typed in this form.")  # fmt: skip


def _server_note(engine: str, info: Any, caps: Capabilities | None) -> str:
    name = NAMES[engine]
    if info is None:
        outcome = caps.outcomes.get(engine) if caps is not None else None
        reason = outcome.error if outcome is not None and outcome.error else "the server was not probed for it"
        return f":warning: {name}: {reason}"
    if engine == "mysql" and info.server is not None:
        return (f":file_cabinet: {info.server.version_comment or name} {info.server.version}, data directory "
                f"`{info.server.datadir}`.")  # fmt: skip
    if engine == "postgresql" and info.server is not None:
        return f":file_cabinet: PostgreSQL {info.server.version} on port {info.port}, data directory " + (
            f"`{info.data_directory}`." if info.data_directory else "not visible to this login."
        )
    if engine == "mongodb" and info.running:
        topology = (info.topology or "unknown topology").replace("_", " ")
        return f":file_cabinet: MongoDB {info.version or ''} ({topology}). {info.note}".strip()
    return f":warning: {info.note or name + ' was not found running.'}{_tried(info)}"


def _tried(info: Any) -> str:
    """The attempts of the probe as a sentence ("Tried: a; b."), or "" when there were none."""
    notes = [a.note.rstrip(".") for a in getattr(info, "attempts", ()) if a.note]
    return f" Tried: {'; '.join(notes)}." if notes else ""


def _verdict_note(ctx: WizardContext, engine: str, info: Any, stored: Mapping[str, Any] | None) -> str | None:
    saved = ctx.data.get("atomicity")
    if stored is not None and isinstance(saved, dict) and saved.get("reason"):
        mark = ":lock:" if saved.get("atomic") else ":warning:"
        return f"{mark} *Consistency*: {saved['reason']}"
    if info is None or (engine == "mysql" and info.server is None):
        return None
    verdict = atomicity.verdict(info, None)
    later = "" if verdict.atomic else " (Checked again for the databases you choose, with the data directory's " \
                                       "snapshot options, when you press Next.)"  # fmt: skip
    return f"{':lock:' if verdict.atomic else ':warning:'} *Consistency*: {verdict.reason}{later}"


async def view(ctx: WizardContext, server: Server, caps: Capabilities | None) -> Part:
    engine = ctx.data["backup_type"]
    info = engine_info(caps, engine)
    stored = previous(ctx, engine)
    rows = await stored_logins(ctx, server, engine)
    detected = detected_login(engine, info)
    choice = _initial_choice(ctx, detected, rows)
    options = [Option(DETECTED, clip(f"Detected: {detected}"), "found by the probe")] if detected else []
    options += [Option(f"{STORED}{r.id}", _row_label(r), f"last test: {r.test_status.value}") for r in rows]
    options.append(Option(NEW, "A new login (enter it below)", "saved encrypted, tested from the server"))
    admin = (await ctx.actor()).is_admin
    fields = [_databases_field(engine, _known(ctx, engine, info, choice), stored), _flags_field(engine, stored, admin),
              Field("credential", "Log in with", "radio", options=tuple(options), initial=choice),
              *_login_fields(engine, info)]  # fmt: skip
    notes = [_server_note(engine, info, caps), _verdict_note(ctx, engine, info, stored),
             _secret_free_note(ctx, server, engine, info, detected)]  # fmt: skip
    buttons = [Button("test_connection", "Test connection", value=choice)]
    if not detected:
        buttons.append(Button("detect_logins", "Look for logins again"))
    return Part(fields=tuple(f for f in fields if f is not None), notes=tuple(n for n in notes if n),
                buttons=tuple(buttons))  # fmt: skip


# --- submit --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypedLogin:
    """A login as typed on the screen (the password only ever in a SecretStr)."""

    user: str
    host: str
    port: int
    password: SecretStr


def _typed_login(engine: str, values: Mapping[str, Any]) -> tuple[Errors, TypedLogin | None]:
    """The new login's fields, validated (errors keyed by field)."""
    user = str(values.get("db_user") or "").strip()
    if not user or any(ch in user for ch in "\x00\n\r") or len(user) > 100:
        return {"db_user": f"Enter the {NAMES[engine]} user for backups (one line, at most 100 characters)."}, None
    errors: Errors = {}
    try:
        host = valid_host(str(values.get("db_host") or "localhost"))
    except InvalidInput as exc:
        errors["db_host"] = str(exc)
    try:
        port = valid_port(values.get("db_port") or DEFAULT_PORTS[engine])
    except InvalidInput as exc:
        errors["db_port"] = str(exc)
    if errors:
        return errors, None
    return {}, TypedLogin(user, host, port, SecretStr(str(values.get("db_password") or "")))


async def _save_login(
    ctx: WizardContext, server: Server, engine: str, values: Mapping[str, Any]
) -> tuple[Errors, DatabaseCredential | None]:
    """Validate the typed login and store it encrypted through the service layer (an admin's act)."""
    errors, login = _typed_login(engine, values)
    if login is None:
        return errors, None
    try:
        row = await credentials.store_login(await ctx.actor(), server, engine, host=login.host, port=login.port,
                                            user=login.user, password=login.password.get_secret_value())  # fmt: skip
    except Refused as exc:
        return {"credential": exc.sentence}, None
    return {}, row


async def _check(pctx: ProbeContext, row: DatabaseCredential) -> dbcheck.CheckResult:
    return await credentials.test_stored(pctx, row, timeout=CHECK_TIMEOUT)


def _chosen_databases(value: Any) -> tuple[bool, list[str]]:
    """(everything?, names) from the multiselect's values or the one-per-line text."""
    if isinstance(value, list | tuple):
        picked = [str(v) for v in value]
        return ALL in picked, [v[len(DB) :] for v in picked if v.startswith(DB)]
    names = lines_of(value)
    return "*" in names, [n for n in names if n != "*"]


async def submit(ctx: WizardContext, server: Server, caps: Capabilities | None, values: Mapping[str, Any]) -> Errors:
    engine = ctx.data["backup_type"]
    info = engine_info(caps, engine)
    detected = detected_login(engine, info)
    pctx = probe_context(ctx, server, caps)
    choice = str(values.get("credential") or _initial_choice(ctx, detected, await stored_logins(ctx, server, engine)))
    row: DatabaseCredential | None = None
    if choice == NEW:
        errors, row = await _save_login(ctx, server, engine, values)
        if row is None:
            return errors
    elif choice.startswith(STORED) and choice[len(STORED) :].isdigit():
        row = await Tenant(ctx.team_id).get_or_none(DatabaseCredential, id=int(choice[len(STORED) :]),
                                                    server_id=server.id, db_type=engine)  # fmt: skip
        if row is None:
            return {"credential": "That saved login is gone; choose another one or enter a new login."}
    elif choice != DETECTED or not detected:
        return {"credential": f"No working {NAMES[engine]} login was detected on this server; enter one."}
    ctx.data["credential_id"] = row.id if row is not None else None
    if row is not None:
        result = await _check(pctx, row)
        if not result.ok:
            await keep_data(ctx)  # the saved login stays chosen: fix the password or pick another
            field = "db_password" if choice == NEW and result.failure == "auth_failed" else "credential"
            return {field: f"{result.message} What to do: {result.fix}"}
        known: list[str] | None = list(result.databases)
    else:
        known = detected_databases(engine, info)
    everything, names = _chosen_databases(values.get("databases"))
    datadir = datadir_of(engine, info)
    ctx.data["_source_found"] = {"engine": engine, "credential_id": ctx.data["credential_id"],
                                 "databases": known, "datadir": datadir}  # fmt: skip
    if not everything and not names:
        await keep_data(ctx)
        seen = f" This login sees: {', '.join(known[:20])}." if known else ""
        return {"databases": f"Choose at least one database, or all of them.{seen}"}
    missing = [n for n in names if known is not None and n not in known]
    if missing:
        await keep_data(ctx)
        return {"databases": f"{', '.join(missing)}: not on this server, or not visible to this login."}
    config: dict[str, Any] = {"databases": [] if everything else names}
    if engine in FLAGS:  # no value at all (not even an empty list): the default (on, but see ADMIN_FLAGS)
        flags = values.get("flags")
        default = _flag_default(engine, (await ctx.actor()).is_admin)
        config[FLAGS[engine][0]] = default if flags is None else FLAGS[engine][0] in lines_of(flags)
    problems = sources.validate(engine, config)
    if problems:
        return errors_from(problems, CONFIG_FIELDS, "databases")
    try:  # the databases within the grant, the table lock an admin's: before the server is asked anything more
        await gate.check_source(await ctx.actor(), server, engine, config)
    except Refused as exc:
        return {"flags" if "lock tables" in exc.sentence else "databases": exc.sentence}
    try:
        verdict, datadir = await _verdict(pctx, engine, info, row, None if everything else names, datadir)
    except (Absent, ProbeError, TransportError) as exc:
        return {"credential": f"The {NAMES[engine]} server could not be inspected for consistency: {exc}"}
    ctx.data["_source_found"]["datadir"] = datadir
    ctx.data["source"] = sources.load_config(engine, config).model_dump(mode="json")
    ctx.data["atomicity"] = {"atomic": verdict.atomic, "method": verdict.method, "reason": verdict.reason}
    size = await _size(pctx, engine, info, datadir, None if everything else names)
    if size is None:
        ctx.data.pop("size_estimate", None)
    else:
        ctx.data["size_estimate"] = size
    return {}


async def _size(
    pctx: ProbeContext, engine: str, info: Any, datadir: str | None, databases: list[str] | None
) -> dict[str, Any] | None:
    """A rough upper bound of the dumps' size: MongoDB's own sizes, else the data directory (time-bounded)."""
    if engine == "mongodb":
        sizes = [d.size_on_disk for d in (info.databases if info is not None else ())
                 if databases is None or d.name in databases]  # fmt: skip
        if not sizes or any(s is None for s in sizes):
            return None
        total = sum(s for s in sizes if s is not None)
        return {"total_bytes": total, "complete": False, "paths": [],
                "summary": f"about {human_bytes(total)} on disk in MongoDB (the dump is usually smaller)."}  # fmt: skip
    if not datadir:
        return None
    try:
        found = await disk.estimate_size(pctx, [datadir], time_limit=SIZE_LIMIT)
    except (ProbeError, TransportError):
        return None
    if not found.total_bytes or found.paths[0].state not in ("measured", "timeout"):
        return None
    bound = "at most about" if found.complete else "more than"
    return {"total_bytes": found.total_bytes, "complete": False, "paths": [datadir],
            "summary": f"{bound} {human_bytes(found.total_bytes)}: the whole data directory {datadir} "
                       "(dumps are usually smaller)."}  # fmt: skip


async def _snapshot_of(pctx: ProbeContext, path: str | None) -> str | None:
    if not path:
        return None
    try:
        return (await snapshots.methods_for_path(pctx, path)).recommended
    except (ProbeError, TransportError):
        return None


async def _verdict(
    pctx: ProbeContext,
    engine: str,
    info: Any,
    row: DatabaseCredential | None,
    databases: list[str] | None,
    datadir: str | None,
) -> tuple[atomicity.Verdict, str | None]:
    """The verdict for the chosen databases, probing with the saved login when detection saw nothing."""
    if engine == "mysql":
        if (info is None or info.server is None) and row is not None:
            info = await mysql.probe(pctx, mysql.credential_from(db_credential(row)), timeout=CHECK_TIMEOUT)
        if info is None:
            info = mysql.MySQLInfo(client="", client_version="", running=False)
        datadir = datadir or datadir_of(engine, info)
        first = atomicity.mysql_verdict(info, None, databases=databases)
        if first.atomic:
            return first, datadir
        return atomicity.mysql_verdict(info, await _snapshot_of(pctx, datadir), databases=databases), datadir
    if engine == "postgresql":
        if datadir is None and row is not None:
            given = postgresql.credential_from(db_credential(row))
            datadir = (await postgresql.probe(pctx, given, timeout=CHECK_TIMEOUT)).data_directory
        return atomicity.postgresql_verdict(info), datadir
    if (info is None or info.topology is None) and row is not None:
        info = await mongodb.probe(pctx, mongodb.credential_from(db_credential(row)), timeout=CHECK_TIMEOUT)
    if info is None:
        info = mongodb.MongoInfo(client_version="", running=False)
    return atomicity.mongodb_verdict(info, None), datadir


# --- test connection -----------------------------------------------------------------------------------------


def _result_note(who: str, result: dbcheck.CheckResult) -> str:
    if result.ok:
        shown = ", ".join(result.databases[:10]) + (f" and {len(result.databases) - 10} more"
                                                    if len(result.databases) > 10 else "")  # fmt: skip
        return f":white_check_mark: {who}: logged in from the server; it sees {len(result.databases)} databases " \
               f"({shown or 'none'})."  # fmt: skip
    return f":x: {who}: {result.message}\n*What to do:* {result.fix}"


async def act(ctx: WizardContext, server: Server, caps: Capabilities | None, action: str, value: str) -> str | None:
    if action == "detect_logins":
        return await _detect_again(ctx, server)
    if action != "test_connection":
        return None
    engine = ctx.data["backup_type"]
    pctx = probe_context(ctx, server, caps)
    choice = str(ctx.form.get("credential") or value)  # the login chosen on the screen now, else the one shown first
    if choice.startswith(STORED) and choice[len(STORED) :].isdigit():
        row = await Tenant(ctx.team_id).get_or_none(DatabaseCredential, id=int(choice[len(STORED) :]),
                                                    server_id=server.id, db_type=engine)  # fmt: skip
        if row is None:
            return "That saved login is gone; choose another one or enter a new login."
        result = await _check(pctx, row)
        if result.ok:
            ctx.data["_source_found"] = {"engine": engine, "credential_id": row.id, "databases": list(result.databases),
                                         "datadir": datadir_of(engine, engine_info(caps, engine))}  # fmt: skip
        return _result_note(_who(row.username, row.host, row.port), result)
    if choice == DETECTED:
        return await _test_detected(pctx, engine)
    return await _test_typed(pctx, engine, ctx.form)


async def _detect_again(ctx: WizardContext, server: Server) -> str:
    """Probe the server anew (a socket login, ``~/.my.cnf`` or ``~/.pgpass`` set up since) and say what was found;
    the view then offers a detected login."""
    engine = ctx.data["backup_type"]
    services = ctx.services
    caps = await refresh_capabilities(server, services.pool, services.specs, alerts=services.alerts)
    found = detected_login(engine, engine_info(caps, engine))
    if found:
        return f":white_check_mark: Found {found}: choose *Detected* below, nothing to type."
    return (f":x: Still no {NAMES[engine]} login the bot can use by itself on {server.name}. It looks for "
            f"{DETECTABLE[engine]}.{_tried(engine_info(caps, engine)) if engine_info(caps, engine) else ''}")


async def _test_typed(pctx: ProbeContext, engine: str, form: Mapping[str, Any]) -> str:
    """Test the login typed on the screen, as it is at the click: nothing is saved (Next saves it, encrypted)."""
    if not form.get("db_user"):
        return (f"Enter the {NAMES[engine]} login below, then press Test connection to try it from the server, or "
                "Next to save it (encrypted) and use it. A login added with `backup-bot credential add` is listed as "
                "a saved login now.")  # fmt: skip
    errors, login = _typed_login(engine, form)
    if login is None:
        return ":x: " + " ".join(errors.values())
    credential = dbcheck.DbCredential(engine=engine, host=login.host, port=login.port, user=login.user,
                                      password=login.password if login.password.get_secret_value() else None,
                                      auth_method="password")  # fmt: skip
    result = await dbcheck.check(pctx, credential, timeout=CHECK_TIMEOUT)
    saved = "\nNot saved yet: press Next to save this login (encrypted) and use it." if result.ok else ""
    return _result_note(_who(login.user, login.host, login.port), result) + saved


async def _test_detected(pctx: ProbeContext, engine: str) -> str:
    probes = {"mysql": mysql.probe, "postgresql": postgresql.probe, "mongodb": mongodb.probe}
    try:
        info = await probes[engine](pctx, timeout=CHECK_TIMEOUT)
    except Absent as exc:
        fix = dbcheck.fix_for("client_missing", engine, "localhost", None)
        return f":x: `{exc}` is not installed on the server.\n*What to do:* {fix}"
    except (ProbeError, TransportError) as exc:
        return f":x: {exc}"
    login = detected_login(engine, info)
    databases = detected_databases(engine, info)
    if login is None:
        return f":x: {info.note or 'No login works.'}{_tried(info)}"
    return f":white_check_mark: Logged in with {login}; it sees {len(databases or [])} databases."
