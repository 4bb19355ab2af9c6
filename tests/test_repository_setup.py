"""Repository setup against a real pool sshd and a real source sshd: create, adopt, and undo on failure."""

from __future__ import annotations

import os
import stat

import pytest

from bot.backup.repository import PoolAccess, RepositorySetupError, RepoSpec, repository_name, set_up, tear_down_access
from bot.borg import create
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import BorgError
from tests.harness.ssh import target_of


def access(pool_host, pool_for) -> PoolAccess:
    return PoolAccess(
        transport=pool_for(pool_host).transport(target_of(pool_host)),
        host=pool_host.host, port=pool_host.port, user=pool_host.user, host_key=pool_host.host_public_key,
    )  # fmt: skip


async def test_new_repository_and_append_only_push(make_sshd, pool_for) -> None:
    source, pool_host = make_sshd("src"), make_sshd("pool")
    pool = access(pool_host, pool_for)
    spec = RepoSpec(name="src-files-etc", base_path=str(pool_host.workdir / "my pool"))
    setup = await set_up(pool_for(source).transport(target_of(source)), pool, spec)
    assert setup.created and setup.key_export.startswith("BORG_KEY ")
    assert (pool_host.workdir / "my pool" / "src-files-etc" / "config").exists()
    keys = (pool_host.home / ".ssh" / "authorized_keys").read_text()
    line = next(x for x in keys.splitlines() if x.endswith(f"backup-bot:{spec.path}"))
    assert line.startswith(
        f"command=\"borg serve --restrict-to-path '{spec.path}' --append-only\",restrict ssh-ed25519 "
    )
    key_file = source.home / setup.key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and "PRIVATE KEY" in key_file.read_text()
    assert setup.passphrase not in repr(setup) and setup.client_key_private not in repr(setup)

    # The source pushes with its own key and the pinned pool host key.
    data = source.workdir / "etc"
    data.mkdir()
    (data / "hosts").write_text("127.0.0.1 localhost\n")
    at_source = setup.source_repo(pool, str(source.home), base_dir=str(source.workdir / "borg-base"))
    src_transport = pool_for(source).transport(target_of(source))
    _, stats = await create.run(src_transport, at_source, create.paths_argv(at_source, "etc-1", [str(data)],
                                                                            create.CreateOptions()))  # fmt: skip
    assert stats.nfiles == 1
    at_pool = Repo(url=spec.path, passphrase=setup.passphrase)
    assert [a.name for a in await borg_list.archives(pool.transport, at_pool)] == ["etc-1"]

    await tear_down_access(src_transport, pool, spec)
    assert f"backup-bot:{spec.path}" not in (pool_host.home / ".ssh" / "authorized_keys").read_text()
    assert not key_file.exists()


async def test_existing_path_is_refused_and_untouched(make_sshd, pool_for) -> None:
    source, pool_host = make_sshd("src2"), make_sshd("pool2")
    pool = access(pool_host, pool_for)
    (pool_host.workdir / "p" / "taken").mkdir(parents=True)
    spec = RepoSpec(name="taken", base_path=str(pool_host.workdir / "p"))
    with pytest.raises(RepositorySetupError, match="already exists on the pool"):
        await set_up(pool_for(source).transport(target_of(source)), pool, spec)
    assert (pool_host.workdir / "p" / "taken").is_dir()


async def test_failure_half_way_leaves_nothing_behind(make_sshd, pool_for) -> None:
    source = make_sshd("src3", nonroot=True)
    pool_host = make_sshd("pool3")
    (source.home / ".config").write_text("a file where the key directory should go")
    pool = access(pool_host, pool_for)
    spec = RepoSpec(name="half", base_path=str(pool_host.workdir / "p"))
    with pytest.raises(RepositorySetupError) as info:
        await set_up(pool_for(source).transport(target_of(source)), pool, spec)
    assert "Writing the push key on the source server failed" in str(info.value)
    assert "Nothing was left behind" in str(info.value)
    assert not os.path.exists(spec.path)
    keys = pool_host.home / ".ssh" / "authorized_keys"
    assert not keys.exists() or "backup-bot:" not in keys.read_text()


async def test_use_existing_needs_the_right_passphrase(make_sshd, pool_for) -> None:
    source, pool_host = make_sshd("src4"), make_sshd("pool4")
    pool = access(pool_host, pool_for)
    first = await set_up(pool_for(source).transport(target_of(source)), pool,
                         RepoSpec(name="shared", base_path=str(pool_host.workdir / "p")))  # fmt: skip
    wrong = RepoSpec(name="shared", base_path=str(pool_host.workdir / "p"), existing_passphrase="not it")
    with pytest.raises(RepositorySetupError) as info:
        await set_up(pool_for(source).transport(target_of(source)), pool, wrong)
    assert isinstance(info.value.__cause__, BorgError) and info.value.__cause__.kind == "passphrase"
    assert (pool_host.workdir / "p" / "shared" / "config").exists()  # an adopted repository is never removed
    right = RepoSpec(name="shared", base_path=str(pool_host.workdir / "p"), existing_passphrase=first.passphrase)
    adopted = await set_up(pool_for(source).transport(target_of(source)), pool, right)
    assert not adopted.created and adopted.passphrase == first.passphrase


def test_naming_convention() -> None:
    assert repository_name("Web 1", "files", "etc & www") == "web-1-files-etc-www"
    for bad in ("", "-"):
        with pytest.raises(RepositorySetupError):
            repository_name(bad, "", "")
