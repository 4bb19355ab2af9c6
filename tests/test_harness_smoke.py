"""Smoke tests of the real-part fixtures in tests/harness/: each one uses its part for real."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path

import asyncmy
import asyncpg
import asyncssh
import pytest
from tortoise.backends.base.config_generator import expand_db_url

from tests.harness.borg import BorgEnv
from tests.harness.btrfs import BtrfsMount
from tests.harness.common import pids_with_env, run
from tests.harness.databases import DatabaseInfo, LoginFactory, database_exists, throwaway_database
from tests.harness.docker import DockerEnv
from tests.harness.lvm import LvmVg
from tests.harness.sshd import SshdFactory, SshHost, generate_ed25519

pytestmark = pytest.mark.root


def pinned(host: SshHost) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """asyncssh ``known_hosts`` trusting exactly this host's current key."""
    return ([asyncssh.import_public_key(host.host_public_key)], [], [])


async def ssh_run(host: SshHost, command: str, **overrides: object) -> asyncssh.SSHCompletedProcess:
    kwargs = {
        "host": host.host,
        "port": host.port,
        "username": host.user,
        "client_keys": [os.fspath(host.client_key_path)],
        "known_hosts": pinned(host),
        "agent_path": None,
        "config": [],
    }
    kwargs.update(overrides)
    async with asyncssh.connect(**kwargs) as conn:
        return await conn.run(command, check=True)


# --- sshd ----------------------------------------------------------------------------------------------------


async def test_two_sshd_hosts_are_distinct_servers(make_sshd: SshdFactory) -> None:
    alpha, beta = make_sshd("alpha"), make_sshd("beta")
    assert alpha.host != beta.host
    for host in (alpha, beta):
        (host.workdir / "marker").write_text(f"marker of {host.name}\n")
        assert asyncssh.import_public_key(host.host_public_key).get_fingerprint() == host.host_key_fingerprint
        assert host.host_key_fingerprint.startswith("SHA256:")

    for host in (alpha, beta):
        result = await ssh_run(host, 'hostname; cat "$BW_TEST_HOST_DIR/marker"; id -u')
        assert result.stdout.splitlines() == [host.hostname, f"marker of {host.name}", "0"]

    # A host key other than the pinned one is refused (beta's key pinned for alpha).
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ssh_run(alpha, "true", known_hosts=pinned(beta))
    # The OpenSSH client with the fixture's known_hosts file works too.
    assert alpha.ssh("echo $BW_TEST_HOST").stdout.strip() == "alpha"


async def test_sshd_stop_and_rekey(make_sshd: SshdFactory) -> None:
    host = make_sshd("rekey")
    old_pin = pinned(host)
    old_fingerprint = host.host_key_fingerprint
    await ssh_run(host, "setsid sleep 777 </dev/null >/dev/null 2>&1 &")  # escapes sshd's process tree
    assert pids_with_env("BW_TEST_HOST_DIR", os.fspath(host.workdir))
    host.stop()
    assert not pids_with_env("BW_TEST_HOST_DIR", os.fspath(host.workdir))  # a dropped host leaves nothing
    with pytest.raises(OSError):
        await ssh_run(host, "true")
    host.restart(new_host_key=True)
    assert host.host_key_fingerprint != old_fingerprint
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ssh_run(host, "true", known_hosts=old_pin)
    assert (await ssh_run(host, "echo ok")).stdout == "ok\n"


async def test_sshd_password_login_installs_a_key(make_sshd: SshdFactory, tmp_path: Path) -> None:
    host = make_sshd("pwhost", nonroot=True, password_auth=True, authorize_client=False)
    assert host.user != "root" and host.password
    new_key = tmp_path / "bot_key"
    public = generate_ed25519(new_key, "bot@test")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh_run(host, "true", client_keys=[os.fspath(new_key)])

    async with asyncssh.connect(
        host.host, host.port, username=host.user, password=host.password, client_keys=None,
        known_hosts=pinned(host), agent_path=None, config=[],
    ) as conn:  # fmt: skip
        uid = (await conn.run("id -u", check=True)).stdout.strip()
        no_sudo = await conn.run("sudo -n true", check=False)
        await conn.run("umask 077 && mkdir -p ~/.ssh && cat >> ~/.ssh/authorized_keys", input=public + "\n", check=True)
    assert uid != "0"
    assert no_sudo.exit_status != 0

    result = await ssh_run(host, "whoami", client_keys=[os.fspath(new_key)])
    assert result.stdout.strip() == host.user


# --- borg ----------------------------------------------------------------------------------------------------


def archive_names(borg_env: BorgEnv, repo: str, *, host: str, passphrase: str, rsh: str | None = None) -> list[str]:
    out = borg_env.run("list", "--json", repo, host=host, passphrase=passphrase, rsh=rsh).stdout
    return [a["name"] for a in json.loads(out)["archives"]]


def test_borg_local_init_create_list(borg_env: BorgEnv, tmp_path: Path) -> None:
    assert borg_env.version.startswith("1.4.")
    repo = os.fspath(tmp_path / "repo")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file.txt").write_text("hello borg\n")
    borg_env.run("init", "--encryption=repokey-blake2", repo, passphrase="s3cret pass")
    borg_env.run("create", f"{repo}::first", tmp_path / "data", passphrase="s3cret pass", via="fd")
    borg_env.run("create", f"{repo}::second", tmp_path / "data", passphrase="s3cret pass", via="command")
    assert archive_names(borg_env, repo, host="local", passphrase="s3cret pass") == ["first", "second"]
    wrong = borg_env.run("list", repo, passphrase="wrong", check=False)
    assert wrong.returncode != 0 and "passphrase" in wrong.stderr.lower()


def _segments(repo: Path) -> dict[str, str]:
    return {
        os.fspath(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo / "data").rglob("*"))
        if p.is_file()
    }


def _last_transaction(repo: Path) -> int:
    return int(re.findall(r"^transaction (\d+),", (repo / "transactions").read_text(), re.M)[-1])


def test_borg_over_ssh_append_only(make_sshd: SshdFactory, borg_env: BorgEnv) -> None:
    """A source server pushes to a pool through a forced-command, append-only key.

    Real borg 1.4 semantics (checked here): through such a key ``borg delete`` *appears* to work — it exits 0
    and writes a new manifest without the archive, so a plain listing no longer shows it — but no committed data
    is removed or overwritten: every earlier segment stays byte-identical, ``borg compact`` frees nothing, and
    rolling the repository back to the transaction before the delete lists the archive again. Deleting the whole
    repository and reaching another path are refused.
    """
    pool, source = make_sshd("pool"), make_sshd("source")
    passphrase = "pool-repo-passphrase"
    repo = pool.workdir / "repos" / "chain1"
    repo.parent.mkdir()
    borg_env.run("init", "--encryption=repokey-blake2", repo, host="pool", passphrase=passphrase)

    source_key = source.workdir / "pool_key"  # the key the bot would generate for this chain
    source_public = generate_ed25519(source_key, "chain1@source")
    pool.authorize(source_public, command=f"borg serve --restrict-to-path {repo} --append-only", restrict=True)
    secret = source.workdir / "passphrase"
    secret.write_text(passphrase)
    secret.chmod(0o600)
    url = pool.borg_url(repo)
    on_source = (
        f"BORG_PASSCOMMAND={shlex.quote('cat ' + os.fspath(secret))} "
        f"BORG_RSH={shlex.quote(pool.borg_rsh(source_key))} borg"
    )

    # borg runs in an ssh session on the source host (borg on PATH via the sshd fixture's SetEnv).
    source.ssh(f"{on_source} create {url}::src1 /etc/hostname")
    source.ssh(f"{on_source} create {url}::src2 /etc/hostname")
    assert archive_names(borg_env, os.fspath(repo), host="pool", passphrase=passphrase) == ["src1", "src2"]
    assert source.borg_base_dir is not None
    assert (source.borg_base_dir / ".config" / "borg" / "security").is_dir()  # the source's own borg state

    # The forced command ignores what the client asks to run.
    assert "pwned" not in pool.ssh("echo pwned", identity=source_key, check=False).stdout
    # Only the one repository path is reachable.
    other = source.ssh(f"{on_source} list {pool.borg_url(pool.workdir / 'other')}", check=False)
    assert other.returncode != 0 and "not allowed" in other.stderr

    before_delete = _last_transaction(repo)
    segments_before = _segments(repo)
    deleted = source.ssh(f"{on_source} delete {url}::src1", check=False)
    assert deleted.returncode == 0, deleted.stderr
    # What the delete did: a new manifest without src1, so a plain listing no longer shows it ...
    assert archive_names(borg_env, os.fspath(repo), host="pool", passphrase=passphrase) == ["src2"]
    source.ssh(f"{on_source} compact {url}")
    nuked = source.ssh(f"{on_source} delete {url}", check=False)
    assert nuked.returncode != 0

    # ... but nothing committed was removed or rewritten.
    segments_after = _segments(repo)
    assert {k: segments_after.get(k) for k in segments_before} == segments_before  # nothing removed/rewritten

    # Roll back to the transaction before the delete (borg's documented append-only recovery) and list directly.
    for path in [*repo.glob("data/*/*"), *repo.glob("index.*"), *repo.glob("hints.*"), *repo.glob("integrity.*")]:
        if int(path.name.split(".")[-1]) > before_delete:
            path.unlink()
    names = archive_names(borg_env, os.fspath(repo), host="pool-after-rollback", passphrase=passphrase)
    assert names == ["src1", "src2"]


# --- databases -----------------------------------------------------------------------------------------------


async def test_postgres_database_roundtrip_and_drop(postgres_role: LoginFactory) -> None:
    with throwaway_database("postgres") as db:
        assert db.url == f"postgres://postgres@127.0.0.1:5432/{db.name}"
        assert expand_db_url(db.url)["credentials"]["database"] == db.name
        conn = await asyncpg.connect(host=db.host, port=db.port, user=db.user, database=db.name)
        try:
            await conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)")
            await conn.execute("INSERT INTO items (label) VALUES ($1), ($2)", "alpha", "beta")
            assert [r["label"] for r in await conn.fetch("SELECT label FROM items ORDER BY id")] == ["alpha", "beta"]
        finally:
            await conn.close()
        assert db.sql("SELECT count(*) FROM items").strip() == "2"

        login = postgres_role(db)
        conn = await asyncpg.connect(
            host=login.host, port=login.port, user=login.user, password=login.password, database=db.name
        )
        try:
            await conn.execute("CREATE TABLE mine (x int)")
            assert await conn.fetchval("SELECT current_user") == login.user
        finally:
            await conn.close()
        postgres_role.close()  # drop the role while its database still exists (the harder order)
    assert not database_exists("postgres", db.name)


async def test_mariadb_database_roundtrip_and_drop(mariadb_user: LoginFactory) -> None:
    with throwaway_database("mysql") as db:
        assert db.url == f"mysql://root:@127.0.0.1:3306/{db.name}"
        assert expand_db_url(db.url)["credentials"]["password"] == ""
        conn = await asyncmy.connect(host=db.host, port=db.port, user=db.user, password="", database=db.name)
        try:
            async with conn.cursor() as cur:
                await cur.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(20))")
                await cur.execute("INSERT INTO items (label) VALUES (%s), (%s)", ("alpha", "beta"))
                await conn.commit()
                await cur.execute("SELECT label FROM items ORDER BY id")
                assert [r[0] for r in await cur.fetchall()] == ["alpha", "beta"]
        finally:
            conn.close()
        assert db.sql("SELECT count(*) FROM items").strip() == "2"

        login = mariadb_user(db)
        assert login.password_checked  # MariaDB really checks passwords
        conn = await asyncmy.connect(
            host=login.host, port=login.port, user=login.user, password=login.password, database=db.name
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT count(*) FROM items")
                assert (await cur.fetchone())[0] == 2
        finally:
            conn.close()
    assert not database_exists("mysql", db.name)


def test_database_fixtures(postgres_db: DatabaseInfo, mariadb_db: DatabaseInfo) -> None:
    assert postgres_db.name != mariadb_db.name
    assert database_exists("postgres", postgres_db.name) and database_exists("mysql", mariadb_db.name)
    assert postgres_db.sql("SELECT current_database()").strip() == postgres_db.name
    assert mariadb_db.sql("SELECT DATABASE()").strip() == mariadb_db.name


# --- btrfs / lvm / docker ------------------------------------------------------------------------------------


def test_btrfs_subvolume_and_readonly_snapshot(btrfs_mount: BtrfsMount) -> None:
    subvol, snap = btrfs_mount.unique("data"), btrfs_mount.unique("snap")
    run(["btrfs", "subvolume", "create", subvol])
    (subvol / "file.txt").write_text("before snapshot\n")
    run(["btrfs", "subvolume", "snapshot", "-r", subvol, snap])
    (subvol / "file.txt").write_text("after snapshot\n")

    listing = run(["btrfs", "subvolume", "list", btrfs_mount]).stdout
    assert f"path {subvol.name}\n" in listing and f"path {snap.name}\n" in listing
    assert os.stat(subvol).st_ino == 256 and os.stat(snap).st_ino == 256  # a subvolume root's inode
    assert (snap / "file.txt").read_text() == "before snapshot\n"
    assert run(["btrfs", "property", "get", snap, "ro"]).stdout.strip() == "ro=true"
    with pytest.raises(OSError):
        (snap / "new.txt").write_text("x")
    run(["btrfs", "subvolume", "delete", snap])
    run(["btrfs", "subvolume", "delete", subvol])


def test_lvm_reports_the_volume_group(lvm_vg: LvmVg) -> None:
    fields = "vg_name,vg_size,vg_free"
    report = json.loads(lvm_vg.run("vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields).stdout)
    (vg,) = report["report"][0]["vg"]
    assert vg["vg_name"] == lvm_vg.vg_name
    assert int(vg["vg_free"]) > 0 and vg["vg_free"] == vg["vg_size"]
    pvs = json.loads(lvm_vg.run("pvs", "--reportformat", "json", "-o", "pv_name,vg_name").stdout)
    assert pvs["report"][0]["pv"] == [{"pv_name": lvm_vg.pv_device, "vg_name": lvm_vg.vg_name}]  # only ours


def test_docker_volume_and_exec(docker_daemon: DockerEnv) -> None:
    volume = f"bwvol{os.urandom(3).hex()}"
    docker_daemon.cli("volume", "create", volume)
    container = docker_daemon.cli(
        "run", "-d", "--network", "none", "-v", f"{volume}:/data", docker_daemon.image, "sleep", "300"
    ).stdout.strip()
    try:
        docker_daemon.cli("exec", container, "sh", "-c", "echo hello from busybox > /data/greeting")
        (info,) = json.loads(docker_daemon.cli("volume", "inspect", volume).stdout)
        assert (Path(info["Mountpoint"]) / "greeting").read_text() == "hello from busybox\n"
    finally:
        docker_daemon.cli("rm", "-f", container, check=False)
        docker_daemon.cli("volume", "rm", volume, check=False)
