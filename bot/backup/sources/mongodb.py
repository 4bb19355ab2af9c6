"""MongoDB: ``mongodump --archive`` streamed to stdout, one archive for the instance (or one per database).

- Whole instance (``databases`` empty): one job; on a replica-set member ``--oplog`` records the writes made
  during the dump so ``mongorestore --oplogReplay`` gives one point in time (the atomicity verdict's method).
  ``--oplog`` cannot be combined with ``--db``, so per-database jobs are consistent per collection only.
- No ``--gzip``: borg compresses and deduplicates, gzip would defeat the deduplication.

How mongodump gets the password: ``--config=/dev/stdin`` — mongodump reads ``password:`` from a YAML config
file (mongo-tools ``ParseConfigFile``: ``ioutil.ReadFile``, which reads a pipe to its end). A fixed ``sh``
script prints the line from the variable :data:`PASSWORD_VAR` (``secret_env``, fed by the transport through
stdin) with the built-in ``printf`` into the dump's stdin, after unsetting it. Why not a URI with the password:
it would be argv (``mongodump --uri``) or need a shell to expand it, which is the same as the config file
with more quoting. The value is JSON-encoded, which is a valid YAML double-quoted scalar for any text.
The user name and authentication database are not secrets and go on argv.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import field_validator

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import Facts, PlanError, SourceConfig, clean_name, dump_name, job_suffix, parse_config
from bot.probes import mongodb as probe
from bot.probes.dbcheck import DbCredential

PASSWORD_VAR = "BACKUP_BOT_MONGO_PASSWORD"  # noqa: S105 - the variable's name, not a password
WITH_CONFIG = f'p=${{{PASSWORD_VAR}-}}; unset {PASSWORD_VAR}\nprintf \'password: %s\\n\' "$p" | exec "$@"\n'
INSTANCE_SUFFIX = "mongodb"


class MongoDBConfig(SourceConfig):
    """``databases`` empty = the whole instance in one archive (with ``--oplog`` on a replica set)."""

    databases: tuple[str, ...] = ()

    @field_validator("databases")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(clean_name(v, "database") for v in value))


class MongoDBFacts(Facts):
    """The MongoDB probe's result and the login to dump with (decrypted by the caller)."""

    info: probe.MongoInfo
    credential: probe.MongoCredential | DbCredential


def credential_of(credential: probe.MongoCredential | DbCredential) -> probe.MongoCredential:
    return credential if isinstance(credential, probe.MongoCredential) else probe.credential_from(credential)


def secret_env(credential: probe.MongoCredential) -> dict[str, str]:
    if credential.user is None or credential.password is None:
        return {}
    return {PASSWORD_VAR: json.dumps(credential.password.get_secret_value())}


def mongodump_argv(credential: probe.MongoCredential, *options: str) -> tuple[str, ...]:
    """``mongodump --archive …`` with the login; through :data:`WITH_CONFIG` when there is a password."""
    login: tuple[str, ...] = ()
    if credential.user is not None:
        login = (f"--username={credential.user}", f"--authenticationDatabase={credential.auth_source}")
    argv = ("mongodump", f"--host={credential.host}", f"--port={credential.port}", *login, *options, "--archive")
    if credential.user is not None and credential.password is not None:
        return ("sh", "-c", WITH_CONFIG, "sh", argv[0], "--config=/dev/stdin", *argv[1:])
    return argv


class MongoDBSource:
    """``mongodb`` (whole instance) or ``mongo-<db>`` archives holding a mongodump archive stream."""

    type = "mongodb"
    config_model = MongoDBConfig

    def plan(self, config: MongoDBConfig, facts: MongoDBFacts) -> list[ArchiveJob]:
        credential = credential_of(facts.credential)
        secrets = secret_env(credential)
        if facts.info.topology == "sharded":
            raise PlanError(
                "This is a mongos router of a sharded cluster: back up each shard's replica set instead "
                "(a dump through mongos cannot be consistent)."
            )
        if not config.databases:
            oplog = ("--oplog",) if facts.info.oplog_possible else ()
            how = "point in time with --oplog" if oplog else "no oplog: not a replica-set member"
            return [ArchiveJob(
                suffix=INSTANCE_SUFFIX, kind="command", command=mongodump_argv(credential, *oplog),
                stdin_name="mongodump.archive", secret_env=secrets, privileged=False,
                description=f"MongoDB, all databases (mongodump --archive, {how})",
            )]  # fmt: skip
        return [
            ArchiveJob(
                suffix=job_suffix("mongo", name), kind="command", command=mongodump_argv(credential, f"--db={name}"),
                stdin_name=dump_name(name, "archive"), secret_env=secrets, privileged=False,
                description=f"MongoDB database {name} (mongodump --archive)",
            )
            for name in config.databases
        ]  # fmt: skip

    def validate(self, config: Mapping[str, Any] | MongoDBConfig) -> list[str]:
        return parse_config(MongoDBConfig, config)[1]
