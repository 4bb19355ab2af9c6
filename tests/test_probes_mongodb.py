"""The MongoDB probe with a STAND-IN for mongosh: no MongoDB server or mongosh can be installed on this machine.

What is real here: the sshd host, the transport (argument quoting, the password fed through stdin into the
environment), and the exact command line mongosh receives. What is not: the ``mongosh`` on the host's PATH is
a stand-in shell script that records its arguments and the password it was given, then replays a transcript
assembled from real public outputs (tests/data/probes/mongo_*.txt; their .source files say where each part
comes from). Unverified, and said so in the issue note: that real mongosh runs SCRIPT as written (``print``,
``EJSON.stringify(v, {relaxed: true})``, ``process.env``, ``db.auth``) and prints exactly these lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from pydantic import SecretStr

from bot.probes import mongodb
from bot.probes.atomicity import verdict
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.dbcheck import DbCredential, check
from bot.probes.mongodb import MongoCredential
from bot.transport import SSHPool, SSHTarget
from tests.harness.common import unique_token

RECORDED = Path(__file__).parent / "data" / "probes"

STAND_IN = r"""#!/bin/sh
# STAND-IN for mongosh (tests/test_probes_mongodb.py): records its arguments and the password it received,
# then replays a recorded transcript. It is not MongoDB.
dir="$BW_TEST_HOST_DIR/mongosh"
if [ "$1" = "--version" ]; then echo "1.6.1"; exit 0; fi
printf '%s\0' "$@" > "$dir/argv"
printf '%s' "${BW_MONGO_PASSWORD-}" > "$dir/password_seen"
printf '%s|%s' "${BW_MONGO_USER-}" "${BW_MONGO_AUTHDB-}" > "$dir/login_seen"
scenario=$(cat "$dir/scenario")
if [ "$scenario" = auth ]; then
  scenario=auth_failed
  [ "${BW_MONGO_PASSWORD-}" = "$(cat "$dir/expected_password")" ] && scenario=auth_ok
fi
[ -f "$dir/$scenario.err" ] && cat "$dir/$scenario.err" >&2
[ -f "$dir/$scenario.out" ] && cat "$dir/$scenario.out"
exit "$(cat "$dir/$scenario.code" 2>/dev/null || echo 0)"
"""


def error_blocks(name: str) -> list[tuple[str, str]]:
    chunks = (RECORDED / name).read_text().split("=== ")[1:]
    return [(kind.strip(), body.rstrip("\n")) for kind, _, body in (c.partition("\n") for c in chunks)]


class StandIn:
    """The stand-in's directory on an sshd host: choose a scenario, read what mongosh was given."""

    def __init__(self, host) -> None:
        self.dir = Path(host.workdir) / "mongosh"
        self.dir.mkdir()
        program = Path(host.workdir) / "bin" / "mongosh"
        program.write_text(STAND_IN)
        program.chmod(0o755)
        for name in ("standalone", "replset", "auth_required", "auth_ok", "auth_failed"):
            (self.dir / f"{name}.out").write_text((RECORDED / f"mongo_{name}.txt").read_text())
        for kind, stderr in error_blocks("mongo_errors_mongosh.txt")[:5]:
            (self.dir / f"{kind}.err").write_text(stderr + "\n")
            (self.dir / f"{kind}.code").write_text("1")
        (self.dir / "garbage.out").write_text("{ databases: [ { name: 'admin' } ] }\n")

    def play(self, scenario: str, expected_password: str = "") -> None:
        (self.dir / "scenario").write_text(scenario)
        (self.dir / "expected_password").write_text(expected_password)

    @property
    def argv(self) -> list[str]:
        return (self.dir / "argv").read_bytes().decode().split("\0")[:-1]

    def seen(self, name: str) -> str:
        return (self.dir / f"{name}_seen").read_text()


@pytest.fixture
async def mongo_host(make_sshd) -> AsyncIterator[tuple[ProbeContext, StandIn]]:
    host = make_sshd("mongo-standin")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)])
    ctx = ProbeContext(pool.transport(SSHTarget(host.host, host.port, host.user, host.host_public_key)))
    yield ctx, StandIn(host)
    await pool.close()


# --- parsers on the recorded transcripts ---------------------------------------------------------------------


def test_parsers_on_recorded_transcripts() -> None:
    credential = MongoCredential()
    standalone = mongodb.info_from(
        mongodb.parse_output((RECORDED / "mongo_standalone.txt").read_text()), "", credential
    )
    assert (standalone.version, standalone.topology, standalone.replica_set) == ("6.0.3", "standalone", None)
    assert standalone.auth_required is False and not standalone.oplog_possible
    assert [(d.name, d.size_on_disk, d.empty) for d in standalone.databases] == [
        ("admin", 83886080, False),
        ("local", 83886080, False),
        ("test", 83886080, False),
    ]
    replset = mongodb.info_from(mongodb.parse_output((RECORDED / "mongo_replset.txt").read_text()), "", credential)
    assert (replset.topology, replset.replica_set, replset.writable_primary) == ("replica_set", "rs0", True)
    assert replset.oplog_possible
    locked = mongodb.info_from(mongodb.parse_output((RECORDED / "mongo_auth_required.txt").read_text()), "", credential)
    assert locked.auth_required is True and locked.databases == () and "requires a login" in locked.note
    assert mongodb.topology_of({"msg": "isdbgrid", "ismaster": True}) == "sharded"


def test_extended_json_numbers() -> None:
    assert [mongodb._number(v) for v in (5, 5.0, {"$numberLong": "7"}, {"$numberInt": "3"}, "x", None, True)] == [
        5,
        5,
        7,
        3,
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "{ databases: [] }\n",
        '@version "7.0"\n@hello {"ok":1}\n',
        "@version 7\n@hello {}\n@end\n",
        "@hello {not json}\n@end\n",
    ],
)
def test_output_parser_refuses_garbage(garbage: str) -> None:
    with pytest.raises(ProbeError, match="mongosh"):
        mongodb.parse_output(garbage)


def test_mongosh_errors_are_classified() -> None:
    for kind, stderr in error_blocks("mongo_errors_mongosh.txt"):
        assert mongodb.classify_error(stderr) == kind, stderr


def test_host_is_validated_before_it_enters_the_uri() -> None:
    assert mongodb.connection_uri(MongoCredential(host="::1", port=27018), 5).startswith("mongodb://[::1]:27018/admin?")
    with pytest.raises(mongodb.ConnectFailure) as info:
        mongodb.connection_uri(MongoCredential(host="db/evil?x=@y"), 5)
    assert info.value.kind == "unknown_host"


# --- through sshd, with the stand-in mongosh -----------------------------------------------------------------


async def test_standalone_without_auth(mongo_host) -> None:
    ctx, stand_in = mongo_host
    stand_in.play("standalone")
    info = await mongodb.probe(ctx, timeout=5)
    assert info.running and info.topology == "standalone" and info.auth_required is False
    assert info.client_version == "1.6.1" and [d.name for d in info.databases] == ["admin", "local", "test"]
    assert stand_in.argv == mongodb.mongosh_argv(MongoCredential(), 5)[1:]  # the exact arguments, through SSH
    assert stand_in.seen("login") == "|" and stand_in.seen("password") == ""
    assert not verdict(info).atomic and verdict(info, "btrfs").method == "snapshot"


async def test_replica_set_allows_oplog(mongo_host) -> None:
    ctx, stand_in = mongo_host
    stand_in.play("replset")
    info = await mongodb.probe(ctx)
    assert info.oplog_possible and info.replica_set == "rs0"
    assert verdict(info).dump_options == ("--oplog",)


async def test_auth_enforced_then_login_with_password_through_stdin(mongo_host) -> None:
    ctx, stand_in = mongo_host
    password = "m0ngo 'pw' $(x) " + unique_token()
    stand_in.play("auth", expected_password=password)
    anonymous = await mongodb.probe(ctx)
    assert anonymous.auth_required is True and not anonymous.authenticated and anonymous.databases == ()
    login = MongoCredential(user="backup", password=SecretStr(password), auth_source="admin")
    info = await mongodb.probe(ctx, login)
    assert info.authenticated and [d.name for d in info.databases] == ["admin", "local", "test"]
    assert stand_in.seen("password") == password and stand_in.seen("login") == "backup|admin"
    assert all(password not in arg for arg in stand_in.argv)


async def test_wrong_password_is_auth_failed(mongo_host) -> None:
    ctx, stand_in = mongo_host
    secret = "BW-SECRET-" + unique_token()
    stand_in.play("auth", expected_password="the-right-one")
    info = await mongodb.probe(ctx, MongoCredential(user="backup", password=SecretStr(secret)))
    assert not info.authenticated and "rejected the login" in info.note and "Authentication failed" in info.note
    result = await check(ctx, DbCredential(engine="mongodb", user="backup", password=SecretStr(secret)))
    assert (result.ok, result.failure) == (False, "auth_failed")
    for shown in (repr(info), info.model_dump_json(), repr(result), result.model_dump_json()):
        assert secret not in shown


@pytest.mark.parametrize("scenario", ["refused", "unknown_host", "timeout"])
async def test_connection_failures(mongo_host, scenario: str) -> None:
    ctx, stand_in = mongo_host
    stand_in.play(scenario)
    info = await mongodb.probe(ctx)
    assert not info.running and info.version is None and info.note
    result = await check(ctx, DbCredential(engine="mongodb", host="db.example", port=27017))
    assert result.failure == scenario and result.fix


async def test_garbage_and_missing_mongosh(mongo_host, make_sshd) -> None:
    ctx, stand_in = mongo_host
    stand_in.play("garbage")
    with pytest.raises(ProbeError, match="mongosh printed something unexpected"):
        await mongodb.probe(ctx)
    bare = make_sshd("mongo-none")  # no stand-in: mongosh really is not installed here
    pool = SSHPool([asyncssh.read_private_key(bare.client_key_path)])
    try:
        with pytest.raises(Absent):
            await mongodb.probe(
                ProbeContext(pool.transport(SSHTarget(bare.host, bare.port, bare.user, bare.host_public_key)))
            )
    finally:
        await pool.close()
