"""The restore pipe and its guards: every stage's exit status counts, names are refused before anything runs,
the sed filter is exact for any database name, and borg's own failures keep their kind and hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.backup import restore_db
from bot.backup.restore_db import DumpRef, RestoreFailed, RestoreRefused
from bot.backup.sources.base import database_of, dump_name
from bot.borg import create, init
from bot.borg.repo import Repo
from bot.probes.dbcheck import DbCredential
from bot.transport import LocalTransport

BORG = str(Path(sys.executable).parent / "borg")
NOREPO = Repo(url="/nonexistent")


async def pipe(*stages: tuple[str, ...]) -> RestoreFailed | None:
    result = await restore_db.run_pipe(LocalTransport(), NOREPO, stages, {}, sudo=False, timeout=30)
    return restore_db.pipe_failure(result, stages[0], "consumer", "the hint")


async def test_all_stages_ok_and_arguments_arrive_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    weird = ["a b", "--", "", "'q'", '"d"', "$(x)", "-n"]
    producer = ("sh", "-c", 'printf "%s|" "$@"', "sh", *weird)
    consumer = ("sh", "-c", 'cat > "$1"', "sh", str(out))
    assert await pipe(producer, (), consumer) is None
    assert out.read_text() == "|".join(weird) + "|"
    assert await pipe(producer, ("tr", "a", "A"), consumer) is None
    assert out.read_text().startswith("A b|")


async def test_a_producer_failing_half_way_fails_the_restore_although_the_consumer_succeeded(tmp_path: Path) -> None:
    """The case a plain ``a | b`` would hide: the consumer loads what it got and exits 0."""
    failure = await pipe(("sh", "-c", "printf half; exit 3"), (), ("sh", "-c", f"cat > {tmp_path / 'x'}"))
    assert failure is not None and failure.stage == "extract" and "exit code 3" in failure.reason
    assert (tmp_path / "x").read_text() == "half"


async def test_consumer_and_filter_failures_name_their_stage() -> None:
    consumer = await pipe(("echo", "data"), (), ("sh", "-c", "cat >/dev/null; echo 'ERROR 1064: syntax' >&2; exit 1"))
    assert consumer is not None and consumer.stage == "restore" and consumer.hint == "the hint"
    assert consumer.reason == "consumer exited with status 1: ERROR 1064: syntax."
    middle = await pipe(("echo", "data"), ("sh", "-c", "exit 4"), ("cat",))
    assert middle is not None and middle.stage == "filter" and "status 4" in middle.reason


async def test_a_consumer_dying_early_is_the_cause_not_the_broken_pipe() -> None:
    big = ("sh", "-c", "yes 'a line of the dump' | head -c 50000000; exit 141")
    failure = await pipe(big, (), ("sh", "-c", "head -c 10 >/dev/null; echo 'pg_restore: error: bad' >&2; exit 1"))
    assert failure is not None and failure.stage == "restore" and "pg_restore: error: bad" in failure.reason


@pytest.mark.parametrize("name", ["shop", "we`ird.db*", "a/b\\c$^[x]", "ünï cødé", "-dash"])
def test_alter_database_filter_matches_exactly_that_database(name: str) -> None:
    quoted = "`" + name.replace("`", "``") + "`"
    other = "`" + name + "x`"
    text = (
        f"ALTER DATABASE {quoted} CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n"
        f"ALTER DATABASE {other} CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n"
        f"INSERT INTO t VALUES ('ALTER DATABASE {quoted} CHARACTER SET x');\n"
    )
    out = subprocess.run(restore_db.alter_database_filter(name), input=text, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci ;"
    assert lines[1:] == text.splitlines()[1:]


def test_targets_are_checked_before_anything_runs() -> None:
    with pytest.raises(RestoreRefused, match="taken from"):
        restore_db.check_target("shop", "shop", overwrite=False, limit=63)
    restore_db.check_target("shop", "shop", overwrite=True, limit=63)
    for bad in ("", "a\nb", "x" * 64):
        with pytest.raises(RestoreRefused):
            restore_db.check_target(bad, "shop", overwrite=False, limit=63)


@pytest.mark.parametrize("name", ["shop", "My DB", "-x", "a/b", "100%", "ünï.cødé"])
def test_dump_names_encode_the_database_reversibly(name: str) -> None:
    encoded = dump_name(name, "pgdump")
    assert "/" not in encoded and not encoded.startswith("-") and database_of(encoded) == name


async def test_a_missing_archive_is_a_borg_failure_with_its_kind(tmp_path: Path) -> None:
    transport = LocalTransport()
    repo = Repo(url=str(tmp_path / "repo"), passphrase="p", base_dir=str(tmp_path / "base"))
    await init.run(transport, repo, borg=BORG)
    login = DbCredential(engine="postgresql", host="127.0.0.1", user="postgres")
    with pytest.raises(RestoreFailed) as listed:
        await restore_db.restore_postgresql(transport, repo, DumpRef("nope"), "t", login, borg=BORG)
    assert listed.value.stage == "list" and listed.value.kind == "archive_missing" and listed.value.hint
    two = create.paths_argv(repo, "two-files", [str(Path(__file__)), str(Path(__file__).parent / "__init__.py")],
                            create.CreateOptions())  # fmt: skip
    await create.run(transport, repo, two, borg=BORG)
    with pytest.raises(RestoreRefused, match="holds 2 files"):
        await restore_db.restore_postgresql(transport, repo, DumpRef("two-files"), "t", login, borg=BORG)
