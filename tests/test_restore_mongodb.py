"""MongoDB restore into a new database name with STAND-INs for mongorestore and mongosh
(tests/data/sources/mongorestore-standin.sh, mongosh-counts-standin.sh; no MongoDB server or tools can be installed
here) on a real sshd host, from an archive made by real borg with the mongodump stand-in: the dump streams from borg
into mongorestore unchanged (same sha256), the namespaces are re-targeted (--nsFrom/--nsTo), the password arrives as
a config on fd 5 (never argv), documents are counted per collection after; an existing target and a failing
mongorestore are reported. Counts and existence are what the stand-ins print, labelled as such."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bot.backup import restore_db
from bot.backup.sources.mongodb import MongoDBConfig, MongoDBSource
from bot.probes.dbcheck import DbCredential
from tests.test_sources_mongodb import LOGIN, PASSWORD, expected_stream, facts
from tests.test_sources_support import install_stand_in, run_job, source_host

__all__ = ["source_host"]


async def _archive(host, transport, repo) -> str:
    install_stand_in(host, "mongodump", "mongodump-standin.sh", RECORD=str(host.workdir / "dump"), LINES="2000",
                     FAIL="no")  # fmt: skip
    [job] = MongoDBSource().plan(MongoDBConfig(databases=("shop",)), facts("mongo_replset.txt"))
    assert (await run_job(transport, repo, job, "mongo-shop-1")).error is None
    return "mongo-shop-1"


def _stand_ins(host, fail: str = "no", existing: str = "-") -> Path:
    record, state = host.workdir / "restore", host.workdir / "mongo-state"
    state.unlink(missing_ok=True)
    install_stand_in(host, "mongorestore", "mongorestore-standin.sh", RECORD=str(record), STATE=str(state), FAIL=fail)
    install_stand_in(host, "mongosh", "mongosh-counts-standin.sh", RECORD=str(record), STATE=str(state),
                     EXISTING=existing)  # fmt: skip
    return record


async def test_stand_in_restore_into_a_new_name_streams_the_dump_and_counts_documents(source_host) -> None:
    host, transport, repo = source_host
    archive = await _archive(host, transport, repo)
    record = _stand_ins(host)
    result = await restore_db.restore_mongodb(transport, repo, restore_db.DumpRef(archive), "shop_restored", LOGIN)
    assert (result.engine, result.source_database, result.target) == ("mongodb", "shop", "shop_restored")
    assert result.tables == {"orders": 3, "users": 2}  # as the mongosh stand-in counted them
    args = Path(f"{record}.args").read_text().splitlines()
    assert args[0] == "--config=/dev/fd/5" and "--nsFrom=shop.*" in args and "--nsTo=shop_restored.*" in args
    assert "--archive" in args and "--nsInclude=shop.*" in args and not any(PASSWORD in a for a in args)
    assert Path(f"{record}.stdin").read_text().strip() == hashlib.sha256(expected_stream(2000)).hexdigest()
    config = f"password: {json.dumps(PASSWORD)}\n".encode()  # a YAML double-quoted scalar, as for mongodump
    assert Path(f"{record}.config").read_text().strip() == hashlib.sha256(config).hexdigest()
    assert "BW_TARGET" in Path(f"{record}.script").read_text() and "shop_restored" not in Path(
        f"{record}.script").read_text()  # the name travels in the environment, not in the script


async def test_stand_in_refusals_and_a_failing_mongorestore(source_host) -> None:
    host, transport, repo = source_host
    archive = await _archive(host, transport, repo)
    _stand_ins(host, existing="taken")
    with pytest.raises(restore_db.RestoreRefused, match="already exists"):
        await restore_db.restore_mongodb(transport, repo, restore_db.DumpRef(archive), "taken", LOGIN)
    with pytest.raises(restore_db.RestoreRefused, match="taken from"):
        await restore_db.restore_mongodb(transport, repo, restore_db.DumpRef(archive), "shop", LOGIN)
    with pytest.raises(restore_db.RestoreRefused, match="cannot be a MongoDB database name"):
        await restore_db.restore_mongodb(transport, repo, restore_db.DumpRef(archive), "a.b", LOGIN)
    _stand_ins(host, fail="yes")
    anonymous = DbCredential(engine="mongodb", host="127.0.0.1")
    with pytest.raises(restore_db.RestoreFailed) as failed:
        await restore_db.restore_mongodb(transport, repo, restore_db.DumpRef(archive), "shop_copy", anonymous)
    assert failed.value.stage == "restore" and "not authorized" in str(failed.value)


def test_counts_parser_needs_the_end_line() -> None:
    assert restore_db.mongo_counts_parse('@exists true\n@count {"c":"a b","n":4}\n@end\n') == (True, {"a b": 4})
    with pytest.raises(restore_db.RestoreFailed, match="cut short"):
        restore_db.mongo_counts_parse("@exists false\n")
    assert json.loads(json.dumps(PASSWORD)) == PASSWORD
