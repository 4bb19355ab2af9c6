"""MongoDB on a server: running? which version, is authentication enforced, is it a replica set (so
``mongodump --oplog`` can take a point-in-time dump), and which databases.

One ``mongosh --quiet --norc <uri> --eval <script>`` run. The script is fixed (no user input in it) and
prints one labelled line per fact, each value serialised with ``EJSON.stringify`` in relaxed mode — mongosh's
documented way to get machine-readable output from ``--eval`` (its default printing is JavaScript-like,
not JSON). The legacy ``mongo`` shell (removed in MongoDB 6.0) is not used: it has no ``process.env``, so
it could not receive a password without putting it on the command line.

Facts and how they are found:
- ``db.version()`` (``buildInfo``) and ``db.hello()`` answer without authentication; ``hello`` has
  ``setName`` on a replica-set member and ``msg: "isdbgrid"`` on a ``mongos`` router.
- authentication on/off: ``listDatabases`` tried *anonymously* first; ``Unauthorized`` (code 13) means
  access control is enabled.
- with credentials: user, password and auth database arrive as environment variables through the
  transport's ``secret_env`` (stdin), and the script calls ``db.auth()``; then ``listDatabases`` again.

The host goes into the connection string only after validation (a DNS name or an IP address), the port is
an integer, so the URI is one well-formed argument.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import SecretStr

from bot.probes.base import Absent, Model, ProbeContext, ProbeError, missing_program
from bot.probes.dbcheck import ConnectFailure, DbCredential, FailureKind, last_line, redact
from bot.validation import InvalidInput
from bot.validation import host as valid_host

Topology = Literal["standalone", "replica_set", "sharded"]
DEFAULT_PORT = 27017
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18

SCRIPT = r"""
const out = (k, v) => print('@' + k + ' ' + EJSON.stringify(v, {relaxed: true}));
const err = (e) => ({ok: 0, code: e.code, codeName: e.codeName, errmsg: e.errmsg || e.message});
const env = process.env;
const admin = db.getSiblingDB('admin');
try {
  out('version', admin.version());
  out('hello', admin.hello());
  try { admin.adminCommand({listDatabases: 1, nameOnly: true}); out('anonymous', {ok: 1}); }
  catch (e) { out('anonymous', err(e)); }
  if (env.BW_MONGO_USER) {
    db.getSiblingDB(env.BW_MONGO_AUTHDB || 'admin').auth(env.BW_MONGO_USER, env.BW_MONGO_PASSWORD || '');
  }
  try { out('databases', admin.adminCommand({listDatabases: 1})); } catch (e) { out('databases', err(e)); }
} catch (e) { out('fatal', err(e)); }
print('@end');
"""


class MongoCredential(Model):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    user: str | None = None
    password: SecretStr | None = None
    auth_source: str = "admin"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class MongoDatabase(Model):
    name: str
    size_on_disk: int | None = None
    empty: bool | None = None


class MongoInfo(Model):
    client_version: str
    running: bool
    version: str | None = None
    topology: Topology | None = None
    replica_set: str | None = None
    writable_primary: bool | None = None
    auth_required: bool | None = None
    authenticated: bool = False
    databases: tuple[MongoDatabase, ...] = ()
    note: str = ""

    @property
    def oplog_possible(self) -> bool:
        """``mongodump --oplog`` needs a replica-set member (it reads ``local.oplog.rs``)."""
        return self.topology == "replica_set"


class MongoFacts(Model):
    """What one script run printed (pure parse, before it is turned into :class:`MongoInfo`)."""

    version: str
    hello: dict[str, Any]
    anonymous: dict[str, Any]
    databases: dict[str, Any] | None = None
    fatal: dict[str, Any] | None = None


# --- pure parsers --------------------------------------------------------------------------------------------


def parse_output(text: str) -> MongoFacts:
    """The labelled lines of :data:`SCRIPT`; anything else (or a cut-off run) raises :class:`ProbeError`."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        label, _, payload = line.strip().partition(" ")
        if label == "@end":
            values["end"] = True
        elif label[1:] in ("version", "hello", "anonymous", "databases", "fatal") and label.startswith("@"):
            try:
                values[label[1:]] = json.loads(payload)
            except json.JSONDecodeError:
                raise ProbeError(f"mongosh printed a {label[1:]} value that is not JSON.") from None
    if "end" not in values or not isinstance(values.get("version"), str) or not isinstance(values.get("hello"), dict):
        raise ProbeError(
            "mongosh printed something unexpected; the server may not be MongoDB or the output was cut short."
        )
    values.pop("end")
    values.setdefault("anonymous", {})
    return MongoFacts(**values)


def _number(value: Any) -> int | None:
    """An integer from relaxed or canonical Extended JSON (``123``, ``123.0``, ``{"$numberLong": "123"}``)."""
    if isinstance(value, dict):
        value = value.get("$numberLong", value.get("$numberInt", value.get("$numberDouble")))
    try:
        return int(float(value)) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def topology_of(hello: dict[str, Any]) -> Topology:
    if hello.get("msg") == "isdbgrid":
        return "sharded"
    return "replica_set" if hello.get("setName") else "standalone"


def parse_databases(reply: dict[str, Any] | None) -> tuple[MongoDatabase, ...]:
    if not reply or _number(reply.get("ok")) != 1 or not isinstance(reply.get("databases"), list):
        return ()
    found = [
        MongoDatabase(
            name=str(d["name"]),
            size_on_disk=_number(d.get("sizeOnDisk")),
            empty=d.get("empty") if isinstance(d.get("empty"), bool) else None,
        )
        for d in reply["databases"]
        if isinstance(d, dict) and "name" in d
    ]
    return tuple(sorted(found, key=lambda d: d.name))


def _failed(reply: dict[str, Any] | None) -> bool:
    return reply is not None and _number(reply.get("ok")) != 1


def info_from(facts: MongoFacts, client: str, credential: MongoCredential) -> MongoInfo:
    """Turn parsed facts into the probe result. A failed login or listing is a note, not an exception:
    version, topology and the authentication setting are known without logging in."""
    hello = facts.hello
    problem = facts.fatal or (facts.databases if _failed(facts.databases) else None)
    return MongoInfo(
        client_version=client,
        running=True,
        version=facts.version,
        topology=topology_of(hello),
        replica_set=hello.get("setName"),
        writable_primary=hello.get("isWritablePrimary", hello.get("ismaster")),
        auth_required=(_number(facts.anonymous.get("code")) == UNAUTHORIZED) if facts.anonymous else None,
        authenticated=credential.user is not None and facts.fatal is None,
        databases=parse_databases(facts.databases),
        note=reply_failure(problem, credential).message if problem else "",
    )


def reply_failure(reply: dict[str, Any], credential: MongoCredential) -> ConnectFailure:
    """A :class:`ConnectFailure` for a failed command reply (``{ok: 0, code, codeName, errmsg}``)."""
    code = _number(reply.get("code"))
    kind: FailureKind = (
        "auth_failed" if code == AUTHENTICATION_FAILED else ("access_denied" if code == UNAUTHORIZED else "other")
    )
    return ConnectFailure(kind, _message(kind, credential, str(reply.get("errmsg") or reply.get("codeName"))))


_PATTERNS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    ("auth_failed", re.compile(r"Authentication failed|AuthenticationFailed")),
    ("access_denied", re.compile(r"requires authentication|not authorized on|Unauthorized")),
    ("unknown_host", re.compile(r"ENOTFOUND|EAI_AGAIN|getaddrinfo")),
    ("refused", re.compile(r"ECONNREFUSED")),
    ("timeout", re.compile(r"ETIMEDOUT|timed out|Server selection timed out")),
)
_SUMMARY: dict[FailureKind, str] = {
    "refused": "Nothing accepts MongoDB connections at {where}",
    "unknown_host": "The host name of {where} does not resolve on the server",
    "timeout": "MongoDB at {where} did not answer in time",
    "auth_failed": "MongoDB at {where} rejected the login",
    "access_denied": "MongoDB at {where} requires a login with more privileges",
    "other": "mongosh failed",
}


def classify_error(stderr: str) -> FailureKind:
    """The failure kind of a mongosh error line (``MongoNetworkError: connect ECONNREFUSED …``)."""
    return next((kind for kind, pattern in _PATTERNS if pattern.search(stderr)), "other")


def _message(kind: FailureKind, credential: MongoCredential, detail: str) -> str:
    secret = credential.password.get_secret_value() if credential.password else None
    summary = _SUMMARY.get(kind, _SUMMARY["other"]).format(where=credential.where)
    return redact(f"{summary} ({detail}).", [secret])


# --- running commands ----------------------------------------------------------------------------------------


def connection_uri(credential: MongoCredential, timeout: float) -> str:
    """``mongodb://host:port/admin?…`` (no credentials in it); refuses a host that is not a name or address."""
    try:
        host = valid_host(credential.host)
    except InvalidInput as exc:
        raise ConnectFailure("unknown_host", str(exc)) from None
    if ":" in host:
        host = f"[{host}]"
    ms = max(1000, round(timeout * 1000))
    return (
        f"mongodb://{host}:{int(credential.port)}/admin?directConnection=true"
        f"&serverSelectionTimeoutMS={ms}&connectTimeoutMS={ms}"
    )


def mongosh_argv(credential: MongoCredential, timeout: float) -> list[str]:
    return ["mongosh", "--quiet", "--norc", connection_uri(credential, timeout), "--eval", SCRIPT]


def secret_env(credential: MongoCredential) -> dict[str, str]:
    """The login for the script's ``db.auth()``; the transport feeds it through stdin, never argv."""
    if credential.user is None:
        return {}
    password = credential.password.get_secret_value() if credential.password else ""
    return {"BW_MONGO_USER": credential.user, "BW_MONGO_PASSWORD": password, "BW_MONGO_AUTHDB": credential.auth_source}


async def client_version(ctx: ProbeContext) -> str:
    result = await ctx.run(["mongosh", "--version"], what="mongosh --version", check=False)
    if not result.ok:
        if missing_program(result):
            raise Absent("mongosh")
        raise ProbeError(f"mongosh --version failed: {result.describe_failure()}.")
    return result.out.strip()


async def run_script(ctx: ProbeContext, credential: MongoCredential, *, timeout: float = 10.0) -> MongoFacts:
    """Run :data:`SCRIPT`; a connection failure raises :class:`ConnectFailure`."""
    result = await ctx.run(
        mongosh_argv(credential, timeout),
        what="mongosh",
        secret_env=secret_env(credential),
        timeout=timeout + 20,
        check=False,
    )
    if not result.ok:
        if missing_program(result):
            raise Absent("mongosh")
        kind = classify_error(result.err)
        raise ConnectFailure(kind, _message(kind, credential, last_line(result.err) or result.describe_failure()))
    return parse_output(result.out)


async def probe(ctx: ProbeContext, credential: MongoCredential | None = None, *, timeout: float = 10.0) -> MongoInfo:
    """Describe the MongoDB server at ``credential`` (default 127.0.0.1:27017, no login)."""
    credential = credential or MongoCredential()
    version = await client_version(ctx)
    try:
        facts = await run_script(ctx, credential, timeout=timeout)
    except ConnectFailure as exc:
        return MongoInfo(client_version=version, running=False, note=exc.message)
    return info_from(facts, version, credential)


def credential_from(db: DbCredential) -> MongoCredential:
    host = db.host if db.host not in ("", "localhost") else "127.0.0.1"
    return MongoCredential(
        host=host,
        port=db.port or DEFAULT_PORT,
        user=db.user,
        password=db.password,
        auth_source=db.auth_source or "admin",
    )


async def check_databases(ctx: ProbeContext, db: DbCredential, *, timeout: float = 10.0) -> tuple[str, ...]:
    """For :func:`bot.probes.dbcheck.check`: log in and list databases; a refused listing is a failure."""
    credential = credential_from(db)
    facts = await run_script(ctx, credential, timeout=timeout)
    problem = facts.fatal or (facts.databases if _failed(facts.databases) else None)
    if problem is not None:
        raise reply_failure(problem, credential)
    return tuple(d.name for d in parse_databases(facts.databases))
