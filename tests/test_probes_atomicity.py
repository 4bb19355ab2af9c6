"""The atomicity verdict (the seed's canDoAtomicBackup): a table of probe results and snapshot capabilities
against the expected method. Pure: the facts are built as the probes return them."""

from __future__ import annotations

import pytest

from bot.probes.atomicity import Verdict, verdict
from bot.probes.mongodb import MongoInfo
from bot.probes.mysql import MySQLInfo, MySQLServer, NonTransactionalTable
from bot.probes.postgresql import PgInfo, PgServer


def mysql_info(*tables: tuple[str, str, str], server: bool = True) -> MySQLInfo:
    facts = MySQLServer(
        flavour="mariadb",
        version="10.11.19-MariaDB",
        version_comment="Debian 12",
        datadir="/var/lib/mysql/",
        current_user="root@localhost",
        databases=("shop", "wiki"),
        non_transactional=tuple(NonTransactionalTable(database=d, table=t, engine=e) for d, t, e in tables),
    )
    return MySQLInfo(client="mariadb", client_version="", running=True, server=facts if server else None)


def mongo_info(topology: str | None, replica_set: str | None = None) -> MongoInfo:
    return MongoInfo(client_version="1.6.1", running=topology is not None, topology=topology, replica_set=replica_set)


PG = PgInfo(
    client_version="psql 15",
    running=True,
    port=5432,
    server=PgServer(
        version_num=150020,
        version="15.20",
        data_directory="/var/lib/postgresql/15/main",
        current_user="postgres",
        superuser=True,
        databases=("app",),
    ),
)
MYISAM = ("wiki", "pages", "MyISAM")
ARIA = ("wiki", "search", "Aria")

# fmt: off
CASES = [
    # (name, facts, snapshot, databases, atomic, method, options, words in the reason)
    ("mysql all InnoDB", mysql_info(), None, None, True, "transaction", ("--single-transaction",),
     ["InnoDB", "--single-transaction"]),
    ("mysql all InnoDB, snapshot available", mysql_info(), "lvm", None, True, "transaction",
     ("--single-transaction",), ["without blocking writes"]),
    ("mysql MyISAM, no snapshot", mysql_info(MYISAM, ARIA), None, None, False, "none", ("--single-transaction",),
     ["2 tables in wiki", "Aria (1), MyISAM (1)", "global read lock", "/var/lib/mysql/"]),
    ("mysql MyISAM, LVM", mysql_info(MYISAM), "lvm", None, True, "snapshot", (),
     ["1 table in wiki uses", "LVM snapshot", "FLUSH TABLES WITH READ LOCK"]),
    ("mysql MyISAM, Btrfs", mysql_info(MYISAM), "btrfs", None, True, "snapshot", (), ["Btrfs snapshot"]),
    ("mysql MyISAM only outside the dumped databases", mysql_info(MYISAM), None, ["shop"], True, "transaction",
     ("--single-transaction",), ["InnoDB"]),
    ("mysql without a login", mysql_info(server=False), "zfs", None, False, "none", (), ["could not log in"]),
    ("postgresql", PG, None, None, True, "transaction", ("--format=custom",),
     ["repeatable-read", "pg_dumpall --globals-only", "not consistent with each other"]),
    ("postgresql with snapshot", PG, "zfs", None, True, "transaction", ("--format=custom",), ["pg_dump"]),
    ("mongodb replica set", mongo_info("replica_set", "rs0"), None, None, True, "transaction", ("--oplog",),
     ["rs0", "--oplog", "point in time"]),
    ("mongodb standalone", mongo_info("standalone"), None, None, False, "none", (),
     ["no oplog", "single-member replica set"]),
    ("mongodb standalone, ZFS", mongo_info("standalone"), "zfs", None, True, "snapshot", (), ["ZFS snapshot"]),
    ("mongodb router", mongo_info("sharded"), "lvm", None, False, "none", (), ["mongos", "every shard"]),
    ("mongodb unknown", mongo_info(None), None, None, False, "none", (), ["could not tell"]),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "facts", "snapshot", "databases", "atomic", "method", "options", "words"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_verdict(name, facts, snapshot, databases, atomic, method, options, words) -> None:
    result = verdict(facts, snapshot, databases=databases)
    assert isinstance(result, Verdict)
    assert (result.atomic, result.method, result.dump_options) == (atomic, method, options), name
    for word in words:
        assert word in result.reason, (word, result.reason)
    assert result.reason.endswith(".") and len(result.reason) < 600  # one readable paragraph for the user


def test_many_databases_are_summarised() -> None:
    tables = [(f"db{i}", "t", "MyISAM") for i in range(8)]
    result = verdict(mysql_info(*tables))
    assert "8 tables in db0, db1, db2, db3, db4 and 3 more use" in result.reason
