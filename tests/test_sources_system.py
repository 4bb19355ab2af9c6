"""The full-system source: the exact excludes, the other file systems it offers, and what borg makes of them."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bot.backup.sources.system import SystemConfig, SystemFacts, SystemSource, other_filesystems, system_excludes
from bot.borg import init
from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.probes.disk import MountInfo
from bot.transport import LocalTransport

BORG = str(Path(sys.executable).parent / "borg")


def mount(target: str, fstype: str, source: str = "/dev/sda1") -> MountInfo:
    return MountInfo(path=target, target=target, source=source, fsroot="/", fstype=fstype, size_bytes=None,
                     avail_bytes=None, via="findmnt")  # fmt: skip


FACTS = SystemFacts(
    mounts=(
        mount("/", "ext4"), mount("/home", "xfs", "/dev/sdb1"), mount("/proc", "proc", "proc"),
        mount("/sys", "sysfs", "sysfs"), mount("/run", "tmpfs", "tmpfs"), mount("/run/user/0", "tmpfs", "tmpfs"),
        mount("/srv/pool", "ext4", "/dev/sdc1"), mount("/boot/efi", "vfat", "/dev/sda15"),
        mount("/var/lib/docker/overlay2/abc/merged", "overlay", "overlay"), mount("/mnt/usb", "ext4", "/dev/sdd1"),
        mount("/snap/core/1", "squashfs", "/dev/loop0"),
    ),
    swap_files=("/swapfile", "/var/swap"),
    local_pool_paths=("/srv/pool",),
    borg_cache_dirs=("/var/lib/backup-bot/borg/.cache/borg",),
)  # fmt: skip


def test_system_plan_has_the_exact_standard_excludes() -> None:
    [job] = SystemSource().plan(SystemConfig(), FACTS)
    assert job.suffix == "system" and job.kind == "paths" and job.paths == ("/",) and job.one_file_system
    assert job.excludes == (
        "fm:/proc/", "fm:/sys/", "fm:/dev/", "fm:/run/", "fm:/tmp/", "fm:/mnt/", "fm:/media/", "fm:/var/tmp/",
        "fm:/var/cache/", "sh:**/lost+found", "pf:/swapfile", "pf:/swap.img", "pf:/var/swap", "pp:/srv/pool",
        "pp:/root/.cache/borg", "pp:/var/lib/backup-bot/borg/.cache/borg",
        "sh:**/.cache", "sh:**/.local/share/Trash", "sh:**/.thumbnails", "sh:**/__pycache__",
    )  # fmt: skip
    assert job.exclude_caches and job.privileged


def test_other_filesystems_are_the_real_ones_outside_excluded_places() -> None:
    assert [m.target for m in other_filesystems(FACTS)] == ["/boot/efi", "/home"]
    config = SystemConfig(extra_filesystems=("/home/",), excludes=("pp:/home/big",), exclude_caches=False)
    [job] = SystemSource().plan(config, FACTS)
    assert job.paths == ("/", "/home") and job.excludes[-1] == "pp:/home/big"
    assert "sh:**/.cache" not in job.excludes and not job.exclude_caches
    assert system_excludes(config, SystemFacts()).count("pp:/root/.cache/borg") == 1


def test_system_validation() -> None:
    source = SystemSource()
    assert source.validate({}) == []
    assert any("only makes sense with one_file_system" in p
               for p in source.validate({"one_file_system": False, "extra_filesystems": ["/home"]}))  # fmt: skip
    assert any("/ is always backed up" in p for p in source.validate({"extra_filesystems": ["/"]}))
    assert any("not an absolute path" in p for p in source.validate({"extra_filesystems": ["home"]}))


async def test_borg_keeps_the_skipped_directories_but_not_their_content(tmp_path: Path) -> None:
    """Real borg on real paths: ``fm:/var/cache/`` keeps /var/cache itself, drops what is inside; /tmp content
    and /dev entries are left out; an ordinary file is kept."""
    transport = LocalTransport()
    repo = Repo(url=str(tmp_path / "repo"), passphrase="x", base_dir=str(tmp_path / "base"))
    await init.run(transport, repo, borg=BORG)
    [job] = SystemSource().plan(SystemConfig(), SystemFacts())
    scratch = Path(tempfile.mkdtemp(dir="/tmp"))
    (scratch / "junk").write_text("junk")
    cached = Path(tempfile.mkdtemp(prefix="bw-test-", dir="/var/cache"))  # content to leave out
    events: list[dict] = []
    args = ["create", "--dry-run", "--list", *(a for p in job.excludes for a in ("--exclude", p)),
            repo.archive("dry"), "/var/cache", str(scratch), "/dev/null", "/etc/hostname"]  # fmt: skip
    try:
        await run_borg(transport, args, repo, on_event=events.append, borg=BORG)
    finally:
        (scratch / "junk").unlink()
        scratch.rmdir()
        cached.rmdir()
    statuses = {e["path"]: e["status"] for e in events if e.get("type") == "file_status"}
    kept = {path for path, status in statuses.items() if status != "x"}  # "x": excluded
    assert kept == {"/var/cache", "/etc/hostname"}, sorted(kept)[:10]
    assert statuses["/dev/null"] == "x" and statuses[str(scratch)] == "x"
    assert statuses[str(cached)] == "x"
