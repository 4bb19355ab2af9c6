"""MongoDB source with a STAND-IN mongodump (tests/data/sources/mongodump-standin.sh; no MongoDB here) on a
real sshd host, archived by real borg: the plan's argv, the password via --config on stdin, the streamed
bytes, and a dump failing half-way leaving no archive. Facts come from the recorded mongosh transcripts of
the probe tests (tests/data/probes/mongo_*.txt, see their .source notes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bot.backup.sources import PlanError
from bot.backup.sources.mongodb import WITH_CONFIG, MongoDBConfig, MongoDBFacts, MongoDBSource
from bot.borg import list as borg_list
from bot.probes import mongodb as mongo_probe
from bot.probes.dbcheck import DbCredential
from tests.test_sources_support import extract_stdout, install_stand_in, run_job, source_host

__all__ = ["source_host"]
RECORDED = Path(__file__).parent / "data" / "probes"
PASSWORD = 'mongo S3cret "q" \\ $HOME: #'
LOGIN = DbCredential(engine="mongodb", host="127.0.0.1", port=27017, user="backup", password=PASSWORD)
LINES = 40_000


def facts(transcript: str, credential: DbCredential = LOGIN) -> MongoDBFacts:
    recorded = mongo_probe.parse_output((RECORDED / transcript).read_text())
    info = mongo_probe.info_from(recorded, "mongosh 2.x (recorded)", mongo_probe.credential_from(credential))
    return MongoDBFacts(info=info, credential=credential)


def expected_stream(lines: int) -> bytes:
    body = "".join(f"document {i:08d} of the stand-in stream\n" for i in range(lines))
    return ("STAND-IN MONGODUMP STREAM\n" + body).encode()


def test_replica_set_gets_oplog_and_standalone_does_not() -> None:
    [replset] = MongoDBSource().plan(MongoDBConfig(), facts("mongo_replset.txt"))
    assert replset.command == ("sh", "-c", WITH_CONFIG, "sh", "mongodump", "--config=/dev/stdin",
                               "--host=127.0.0.1", "--port=27017", "--username=backup",
                               "--authenticationDatabase=admin", "--oplog", "--archive")  # fmt: skip
    assert replset.suffix == "mongodb" and replset.secret_env == {"BACKUP_BOT_MONGO_PASSWORD": json.dumps(PASSWORD)}
    [alone] = MongoDBSource().plan(MongoDBConfig(), facts("mongo_standalone.txt"))
    assert "--oplog" not in alone.command and "no oplog" in alone.description
    per_db = MongoDBSource().plan(MongoDBConfig(databases=("shop", "Shop")), facts("mongo_replset.txt"))
    assert [j.command[-2] for j in per_db] == ["--db=shop", "--db=Shop"] and len({j.suffix for j in per_db}) == 2
    anonymous = DbCredential(engine="mongodb", host="127.0.0.1")
    [plain] = MongoDBSource().plan(MongoDBConfig(), facts("mongo_standalone.txt", anonymous))
    assert plain.command == ("mongodump", "--host=127.0.0.1", "--port=27017", "--archive") and not plain.secret_env


def test_a_mongos_router_is_refused() -> None:
    sharded = facts("mongo_replset.txt")
    info = sharded.info.model_copy(update={"topology": "sharded"})
    with pytest.raises(PlanError, match="each shard"):
        MongoDBSource().plan(MongoDBConfig(), sharded.model_copy(update={"info": info}))


async def test_stand_in_dump_streams_into_borg_with_the_password_on_stdin(source_host) -> None:
    host, transport, repo = source_host
    record = host.workdir / "mongodump-record"
    install_stand_in(host, "mongodump", "mongodump-standin.sh", RECORD=str(record), LINES=str(LINES), FAIL="no")
    [job] = MongoDBSource().plan(MongoDBConfig(), facts("mongo_replset.txt"))
    run = await run_job(transport, repo, job, "mongodb-1")
    assert run.error is None, run.error
    assert await extract_stdout(transport, repo, "mongodb-1") == expected_stream(LINES)
    assert Path(f"{record}.args").read_text().splitlines() == list(job.command[5:])
    config = f"password: {json.dumps(PASSWORD)}\n".encode()
    assert Path(f"{record}.config").read_text().strip() == hashlib.sha256(config).hexdigest()
    assert json.loads(json.dumps(PASSWORD)) == PASSWORD  # what YAML's double-quoted scalar gives back


async def test_stand_in_dump_failing_half_way_leaves_no_archive(source_host) -> None:
    host, transport, repo = source_host
    record = host.workdir / "mongodump-record"
    install_stand_in(host, "mongodump", "mongodump-standin.sh", RECORD=str(record), LINES=str(LINES), FAIL="yes")
    [job] = MongoDBSource().plan(MongoDBConfig(), facts("mongo_replset.txt"))
    run = await run_job(transport, repo, job, "mongodb-2")
    assert run.error is not None and run.error.kind == "source"
    assert "'sh' exited with status 1" in str(run.error) and PASSWORD not in str(run.error)
    assert await borg_list.archives(transport, repo) == []
