"""The borg layer against real borg 1.4: locally, and pushed from a source sshd host to a pool sshd host."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncssh
import pytest

from bot.borg import check, compact, create, delete, extract, info, init, key, prune
from bot.borg import list as borg_list
from bot.borg.repo import InvalidName, Repo, rsh_command, ssh_url
from bot.borg.runner import BorgError, run_borg
from bot.transport import LocalTransport
from tests.harness.ssh import target_of

BORG = str(Path(__import__("sys").executable).parent / "borg")
PASS = "correct horse 'battery' $(staple)"


@pytest.fixture
def local(tmp_path: Path) -> tuple[LocalTransport, Repo, Path]:
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "sub dir" / "a file.txt").write_text("hello " * 1000)
    repo = Repo(url=str(tmp_path / "repo"), passphrase=PASS, base_dir=str(tmp_path / "base"))
    return LocalTransport(), repo, src


async def test_full_cycle_locally(local, tmp_path: Path) -> None:
    transport, repo, src = local
    await init.run(transport, repo, borg=BORG)
    for day in (1, 2, 3):
        options = create.CreateOptions(timestamp=f"2026-01-0{day}T10:00:00")
        result, stats = await create.run(transport, repo, create.paths_argv(repo, f"files-{day}", [str(src)], options),
                                         borg=BORG)  # fmt: skip
        assert result.outcome == "ok" and stats.name == f"files-{day}" and stats.nfiles == 1
        assert stats.original_size == 6000
    assert PASS not in " ".join(result.argv)
    names = [a.name for a in await borg_list.archives(transport, repo, borg=BORG)]
    assert names == ["files-1", "files-2", "files-3"]
    items = await borg_list.items(transport, repo, "files-3", borg=BORG)
    assert any(i["path"].endswith("sub dir/a file.txt") for i in items)
    dry = await prune.run(transport, repo, {"keep_daily": 2}, glob="files-*", dry_run=True, borg=BORG)
    assert [(p.name, p.keep, p.rule, p.rank) for p in dry] == [
        ("files-3", True, "daily", 1), ("files-2", True, "daily", 2), ("files-1", False, None, None)]  # fmt: skip
    assert len(await borg_list.archives(transport, repo, borg=BORG)) == 3  # dry run changed nothing
    await prune.run(transport, repo, {"keep_daily": 2}, glob="files-*", borg=BORG)
    await delete.archives(transport, repo, ["files-2"], borg=BORG)
    assert [a.name for a in await borg_list.archives(transport, repo, borg=BORG)] == ["files-3"]
    assert (await compact.run(transport, repo, borg=BORG)) is not None
    assert (await check.run(transport, repo, borg=BORG)).ok
    totals = await info.repository(transport, repo, borg=BORG)
    assert totals.encryption == "repokey BLAKE2b" or "blake2" in totals.encryption.lower()
    assert (await key.export(transport, repo, borg=BORG)).startswith("BORG_KEY ")
    target = tmp_path / "restore here"
    await extract.run(transport, repo, "files-3", str(target), borg=BORG)
    restored = target / str(src).lstrip("/") / "sub dir" / "a file.txt"
    assert restored.read_text() == "hello " * 1000


async def test_streamed_dump_and_a_failing_dump_leaves_no_archive(local) -> None:
    transport, repo, _ = local
    await init.run(transport, repo, borg=BORG)
    good = create.command_argv(repo, "db-1", "db.sql", ["sh", "-c", "echo 'INSERT 1;'"], create.CreateOptions())
    _, stats = await create.run(transport, repo, good, borg=BORG)
    assert stats.nfiles == 1
    bad = create.command_argv(repo, "db-2", "db.sql", ["sh", "-c", "echo half; exit 3"], create.CreateOptions())
    with pytest.raises(BorgError) as info_:
        await create.run(transport, repo, bad, borg=BORG)
    assert info_.value.kind == "source" and "exited with status 3" in str(info_.value)
    assert [a.name for a in await borg_list.archives(transport, repo, borg=BORG)] == ["db-1"]


async def test_failures_map_to_kinds_with_hints(local, tmp_path: Path) -> None:
    transport, repo, src = local
    await init.run(transport, repo, borg=BORG)
    wrong = Repo(url=repo.url, passphrase="nope", base_dir=str(tmp_path / "other-client"))
    cases = [
        (borg_list.archives(transport, wrong, borg=BORG), "passphrase", 52),
        (borg_list.archives(transport, Repo(url=str(tmp_path / "missing"), passphrase="x"), borg=BORG),
         "repo_missing", 13),
        (init.run(transport, repo, borg=BORG), "repo_exists", 10),
        (borg_list.archives(transport, repo, borg="/nonexistent/borg"), "borg_missing", 127),
    ]  # fmt: skip
    for call, kind, code in cases:
        with pytest.raises(BorgError) as caught:
            await call
        assert (caught.value.kind, caught.value.result.exit_code) == (kind, code)
        assert caught.value.hint and PASS not in str(caught.value)
    options = create.CreateOptions()
    await create.run(transport, repo, create.paths_argv(repo, "same", [str(src)], options), borg=BORG)
    with pytest.raises(BorgError) as caught:
        await create.run(transport, repo, create.paths_argv(repo, "same", [str(src)], options), borg=BORG)
    assert caught.value.kind == "archive_exists"


async def test_lock_timeout_is_transient(local) -> None:
    transport, repo, _ = local
    await init.run(transport, repo, borg=BORG)
    holder = asyncio.create_task(run_borg(transport, ["with-lock", repo.url, "sleep", "5"], repo, borg=BORG))
    try:
        for _ in range(50):
            if await asyncio.to_thread(lambda: list(Path(repo.url).glob("lock.*"))):
                break
            await asyncio.sleep(0.1)
        with pytest.raises(BorgError) as caught:
            await borg_list.archives(transport, repo, borg=BORG, lock_wait=1)
        assert caught.value.kind == "lock" and caught.value.transient
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


async def test_quota_exceeded_is_disk_full(local, tmp_path: Path) -> None:
    transport, repo, src = local
    await init.run(transport, repo, storage_quota="10M", borg=BORG)
    (src / "big").write_bytes(os.urandom(25_000_000))
    with pytest.raises(BorgError) as caught:
        await create.run(transport, repo, create.paths_argv(repo, "big", [str(src)], create.CreateOptions()),
                         borg=BORG)  # fmt: skip
    assert caught.value.kind == "disk_full" and not caught.value.transient
    assert await borg_list.archives(transport, repo, borg=BORG) == []
    assert (await check.run(transport, repo, borg=BORG)).ok


async def test_progress_events_stream_from_log_json(local) -> None:
    transport, repo, src = local
    await init.run(transport, repo, borg=BORG)
    events: list[dict] = []
    options = create.CreateOptions(progress=True)
    await create.run(transport, repo, create.paths_argv(repo, "p", [str(src)], options), on_event=events.append,
                     borg=BORG)  # fmt: skip
    assert {"archive_progress"} <= {e["type"] for e in events}


def test_names_and_urls_are_validated() -> None:
    for bad in ("has space", "a::b", "../x", "", "x/y", "-rf"):
        with pytest.raises(InvalidName):
            Repo(url="/r").archive(bad)
    assert ssh_url("borg", "::1", 2222, "/srv/r") == "ssh://borg@[::1]:2222/srv/r"
    with pytest.raises(ValueError, match="keep something"):
        prune.policy_args({"keep_daily": 0})
    assert "'StrictHostKeyChecking=yes'" in rsh_command("/k", "/kh") or "StrictHostKeyChecking=yes" in rsh_command(
        "/k", "/kh"
    )


async def test_push_from_source_to_pool_over_ssh_with_an_append_only_key(make_sshd, pool_for, tmp_path) -> None:
    """The bot runs borg on the source server; the source reaches the pool only through a forced
    `borg serve --restrict-to-path … --append-only` key."""
    source, pool_host = make_sshd("source"), make_sshd("pool")
    repo_path = pool_host.workdir / "repos" / "web1-files"
    push_key = asyncssh.generate_private_key("ssh-ed25519", comment="push")
    key_file = tmp_path / "push_key"
    key_file.write_bytes(push_key.export_private_key())
    key_file.chmod(0o600)
    pool_host.authorize(push_key.export_public_key().decode().strip(), restrict=True,
                        command=f"borg serve --restrict-to-path {repo_path} --append-only")  # fmt: skip
    known = tmp_path / "known_hosts"
    known.write_text(pool_host.known_hosts_line + "\n")
    # The pool side (the bot's own unrestricted access) creates the repository.
    at_pool = Repo(url=str(repo_path), passphrase=PASS)
    await init.run(pool_for(pool_host).transport(target_of(pool_host)), at_pool)
    at_source = Repo(url=ssh_url(pool_host.user, pool_host.host, pool_host.port, str(repo_path)), passphrase=PASS,
                     rsh=rsh_command(str(key_file), str(known)))  # fmt: skip
    src_transport = pool_for(source).transport(target_of(source))
    data = source.workdir / "data"
    data.mkdir()
    (data / "f").write_text("from the source")
    _, stats = await create.run(
        src_transport, at_source, create.paths_argv(at_source, "web1-1", [str(data)], create.CreateOptions())
    )
    assert stats.nfiles == 1
    listed = await borg_list.archives(pool_for(pool_host).transport(target_of(pool_host)), at_pool)
    assert [a.name for a in listed] == ["web1-1"]
    other = Repo(url=ssh_url(pool_host.user, pool_host.host, pool_host.port, str(pool_host.workdir / "elsewhere")),
                 passphrase=PASS, rsh=at_source.rsh)  # fmt: skip
    with pytest.raises(BorgError) as caught:
        await init.run(src_transport, other)
    assert caught.value.kind == "not_allowed"


async def test_prune_lines_include_the_oldest_fallback(local) -> None:
    transport, repo, src = local
    await init.run(transport, repo, borg=BORG)
    for name, ts in (("x-1", "2026-01-01T09:00:00"), ("x-2", "2026-01-01T10:00:00"), ("x-3", "2026-01-02T10:00:00")):
        options = create.CreateOptions(timestamp=ts)
        await create.run(transport, repo, create.paths_argv(repo, name, [str(src)], options), borg=BORG)
    lines = await prune.run(transport, repo, {"keep_daily": 5}, dry_run=True, borg=BORG)
    assert [(p.name, p.keep, p.rule, p.rank) for p in lines] == [
        ("x-3", True, "daily", 1), ("x-2", True, "daily", 2), ("x-1", True, "daily[oldest]", 3)]  # fmt: skip


def test_compression_specs() -> None:
    assert [create.compression(s) for s in ("lz4", "ZSTD, 3", "auto,zstd,10", "none", "zlib")] == [
        "lz4", "zstd,3", "auto,zstd,10", "none", "zlib"]  # fmt: skip
    for bad in ("zstd,23", "gzip", "lz4,1", "auto", "zstd,x", ""):
        with pytest.raises(ValueError, match="not a borg compression"):
            create.compression(bad)


async def test_a_lock_left_by_a_killed_borg_does_not_fail_the_next_command(local) -> None:
    """A borg killed while holding the repository lock (the bot host crashed mid-backup) leaves lock.exclusive and
    the lock roster behind. borg (hostnames are unique by default in 1.4) sees the holder's process is gone, removes
    both and proceeds: the retry after a crash is not blocked by the crash's lock."""
    transport, repo, _ = local
    await init.run(transport, repo, "repokey-blake2", borg=BORG)
    env = {**os.environ, **repo.env(), **repo.secret_env()}
    holder = await asyncio.create_subprocess_exec(BORG, "with-lock", repo.url, "sleep", "300", env=env)
    lock = Path(repo.url) / "lock.exclusive"
    for _ in range(100):
        if lock.is_dir() and any(lock.iterdir()):
            break
        await asyncio.sleep(0.1)
    holder.kill()
    await holder.wait()
    assert lock.is_dir()  # the dead holder's lock is still there
    assert await borg_list.archives(transport, repo, borg=BORG, lock_wait=20) == []
    assert not lock.exists()


def test_borg_stopped_by_the_output_cap_is_not_retried() -> None:
    """A borg call the transport stopped for printing past the output cap would stop the same way again: it is an
    error (not the retried "killed"), and the reason says what stopped it."""
    from bot.borg.runner import KINDS, outcome_of
    from bot.transport.base import CommandResult

    stopped = CommandResult(("borg", "list"), None, b"x" * 10, b"", "the bot's output limit", 1.0,
                            overflow="borg list printed more than 32 MiB on stdout and was stopped.")  # fmt: skip
    result = outcome_of(stopped)
    assert result.outcome == "error" and result.kind == "error" and not KINDS[result.kind][0]
    assert "output limit" in result.reason
    killed = outcome_of(CommandResult(("borg", "list"), None, b"", b"", "SIGKILL", 1.0))
    assert killed.kind == "killed" and KINDS["killed"][0]  # a real kill is still retried
