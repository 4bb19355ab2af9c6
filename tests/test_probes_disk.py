"""The disk probe against real sshd hosts: findmnt (and the df fallback) on real filesystems incl. a real Btrfs
loop mount, du on real trees with hostile names, unreadable entries for a real non-root login, and the parsers on
recorded and garbage output.

Servers without findmnt/df are simulated by giving the commands a PATH (``ProbeContext.env``) holding symlinks to
only some of the real tools; nothing on the machine is removed.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.probes import disk
from bot.probes.base import ProbeContext, ProbeError
from bot.transport.base import CommandResult, CommandTimeout

RECORDED = Path(__file__).parent / "data" / "probes"
NASTY_NAMES = [
    "with space",
    "quote ' single",
    'quote " double',
    "semi; touch CANARY",
    "$(touch CANARY)",
    "`touch CANARY`",
    "new\nline; touch CANARY",
    "-n",
    "glob * ?",
    "ünïcødé",
]


def tools_dir(where: Path, *names: str) -> str:
    """A directory with symlinks to only these real programs: a PATH for a server lacking the others."""
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        real = next(Path(d) / name for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin") if (Path(d) / name).exists())
        (where / name).symlink_to(real)
    return os.fspath(where)


def is_mount(path: Path) -> bool:
    return os.path.ismount(path)


def du_bytes(path: Path) -> int:
    """What `du -x -B1` counts for a tree without hard links: allocated blocks of every entry, directories too."""
    total = path.lstat().st_blocks * 512
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                total += (Path(root) / name).lstat().st_blocks * 512
    return total


def make_tree(base: Path, sizes: Sequence[int]) -> Path:
    base.mkdir(parents=True)
    (base / "sub").mkdir()
    for i, size in enumerate(sizes):
        (base / ("sub" if i % 2 else ".") / f"f{i}").write_bytes(os.urandom(size))
    return base


# --- findmnt / df on real filesystems --------------------------------------------------------------------------


async def test_mount_info_of_a_real_path(sshd_host, ctx_for, tmp_path) -> None:
    info = await disk.mount_info(ctx_for(sshd_host), os.fspath(tmp_path))
    stat = os.statvfs(tmp_path)
    assert info.via == "findmnt" and info.path == os.fspath(tmp_path)
    target = Path(info.target)
    assert is_mount(target) and (tmp_path == target or target in tmp_path.parents)
    assert info.size_bytes == stat.f_blocks * stat.f_frsize
    assert info.avail_bytes is not None and 0 < info.avail_bytes <= info.size_bytes
    assert info.fstype and info.source and info.fsroot.startswith("/")


async def test_btrfs_mount_reports_btrfs(sshd_host, ctx_for, btrfs_mount) -> None:
    inside = btrfs_mount.unique("disk")
    inside.mkdir()
    info = await disk.mount_info(ctx_for(sshd_host), os.fspath(inside))
    assert (info.fstype, info.target, info.source, info.fsroot) == ("btrfs", str(btrfs_mount), btrfs_mount.device, "/")
    assert info.size_bytes is not None and info.size_bytes > 200 * 2**20


async def test_missing_path_is_a_precise_sentence(sshd_host, ctx_for, tmp_path) -> None:
    missing = os.fspath(tmp_path / "no such dir" / "x")
    with pytest.raises(ProbeError) as err:
        await disk.mount_info(ctx_for(sshd_host), missing)
    assert str(err.value) == (
        f"{missing!r} does not exist on this server. Check the spelling (paths are case-sensitive)."
    )


@pytest.mark.parametrize("bad", ["relative/dir", "", "/with\x00nul"])
async def test_non_absolute_paths_are_refused_before_running_anything(bad: str) -> None:
    class NoRun:
        name = "never"

        async def run(self, argv, **kwargs) -> CommandResult:
            raise AssertionError("nothing should run for an invalid path")

        async def close(self) -> None:
            return None

    with pytest.raises(ProbeError, match="is not an absolute path"):
        await disk.mount_info(ProbeContext(NoRun()), bad)
    with pytest.raises(ProbeError, match="is not an absolute path"):
        await disk.estimate_size(ProbeContext(NoRun()), ["/ok", bad])


async def test_server_without_findmnt_falls_back_to_df(sshd_host, ctx_for, tmp_path) -> None:
    path = os.fspath(tmp_path)
    with_findmnt = await disk.mount_info(ctx_for(sshd_host), path)
    ctx = ctx_for(sshd_host, env={"PATH": tools_dir(tmp_path / "bin", "df", "ls")})
    via_df = await disk.mount_info(ctx, path)
    assert via_df.via == "df" and via_df.fsroot == ""
    for field in ("target", "fstype", "size_bytes"):
        assert getattr(via_df, field) == getattr(with_findmnt, field), field
    with pytest.raises(ProbeError, match="does not exist on this server"):
        await disk.mount_info(ctx, os.fspath(tmp_path / "gone"))


async def test_findmnt_without_json_support_falls_back_to_df(sshd_host, ctx_for, tmp_path) -> None:
    # A stand-in `findmnt` answering like util-linux 2.23 (CentOS 7) does to -J; the df fallback is the real one.
    bin_dir = Path(tools_dir(tmp_path / "bin", "df", "ls"))
    (bin_dir / "findmnt").write_text("#!/bin/sh\necho \"findmnt: unrecognized option '-J'\" >&2\nexit 1\n")
    (bin_dir / "findmnt").chmod(0o755)
    info = await disk.mount_info(ctx_for(sshd_host, env={"PATH": os.fspath(bin_dir)}), os.fspath(tmp_path))
    assert info.via == "df" and info.fstype


async def test_server_without_findmnt_and_df_names_what_to_install(sshd_host, ctx_for, tmp_path) -> None:
    ctx = ctx_for(sshd_host, env={"PATH": tools_dir(tmp_path / "bin", "ls")})
    with pytest.raises(ProbeError) as err:
        await disk.mount_info(ctx, os.fspath(tmp_path))
    assert "Neither findmnt nor df is installed" in str(err.value)
    assert "util-linux" in str(err.value) and "coreutils" in str(err.value)


async def test_hostile_paths_are_passed_literally(sshd_host, ctx_for, tmp_path) -> None:
    home = Path(pwd.getpwnam("root").pw_dir)
    paths = []
    for i, name in enumerate(NASTY_NAMES):
        paths.append(make_tree(tmp_path / "nasty" / name, [1000 * (i + 1)]))
    ctx = ctx_for(sshd_host)
    for path in paths:
        info = await disk.mount_info(ctx, os.fspath(path))
        assert info.path == os.fspath(path) and info.via == "findmnt"
    estimate = await disk.estimate_size(ctx, [os.fspath(p) for p in paths], time_limit=30)
    assert [r.path for r in estimate.paths] == [os.fspath(p) for p in paths]
    assert [r.state for r in estimate.paths] == ["measured"] * len(paths)
    assert [r.bytes for r in estimate.paths] == [du_bytes(p) for p in paths]
    for where in (home, tmp_path, tmp_path / "nasty", Path("/")):
        assert not (where / "CANARY").exists(), f"shell injection: {where}/CANARY was created"


# --- du --------------------------------------------------------------------------------------------------------


async def test_size_estimate_of_real_trees(sshd_host, ctx_for, tmp_path) -> None:
    a = make_tree(tmp_path / "a", [10_000, 200_000, 3])
    b = make_tree(tmp_path / "b", [50_000])
    paths = [os.fspath(a), os.fspath(a / "sub"), os.fspath(b), os.fspath(tmp_path / "missing")]
    estimate = await disk.estimate_size(ctx_for(sshd_host), paths, time_limit=30)
    by_path = {r.path: r for r in estimate.paths}
    assert by_path[os.fspath(a)].bytes == du_bytes(a)
    assert by_path[os.fspath(a / "sub")].bytes == du_bytes(a / "sub")
    assert by_path[os.fspath(b)].bytes == du_bytes(b)
    assert by_path[paths[3]].state == "missing" and by_path[paths[3]].bytes is None
    assert estimate.total_bytes == du_bytes(a) + du_bytes(b)  # a/sub is inside a: not counted twice
    assert not estimate.complete and "not measured: " + paths[3] in estimate.summary


async def test_unreadable_entries_are_counted_not_fatal(make_sshd, ctx_for) -> None:
    host = make_sshd("dunonroot", nonroot=True)
    data = make_tree(host.home / "data", [30_000, 40_000])
    locked = data / "locked"
    locked.mkdir()
    (locked / "secret").write_bytes(os.urandom(20_000))
    locked.chmod(0o700)  # owned by root: the throwaway user cannot read it
    estimate = await disk.estimate_size(ctx_for(host, privileged=False), [os.fspath(data)], time_limit=30)
    (result,) = estimate.paths
    assert result.state == "measured" and result.unreadable == 1 and result.lower_bound
    assert result.bytes == du_bytes(data) - du_bytes(locked) + locked.lstat().st_blocks * 512
    assert "1 entries could not be read (permission denied)" in estimate.summary


async def test_time_bound_gives_a_partial_answer(sshd_host, ctx_for, tmp_path) -> None:
    # A stand-in `du` (it prints one first-level record the way GNU du does, then hangs) makes "too slow" certain
    # without timing assumptions; the script, `timeout`, the transport and the parser are the real ones.
    bin_dir = Path(tools_dir(tmp_path / "bin", "sh", "date", "timeout", "sleep"))
    (bin_dir / "du").write_text(
        '#!/bin/sh\ncase "$*" in *" /dev/null") exit 0;; esac\n'
        'for last; do :; done\nprintf "4096\\t%s/first\\0" "$last"\nexec sleep 60\n'
    )
    (bin_dir / "du").chmod(0o755)
    ctx = ctx_for(sshd_host, env={"PATH": os.fspath(bin_dir)})
    estimate = await disk.estimate_size(ctx, ["/srv/huge", "/srv/next"], time_limit=2)
    huge, nxt = estimate.paths
    assert (huge.state, huge.bytes, huge.lower_bound) == ("timeout", 4096, True)
    assert (nxt.state, nxt.bytes) == ("skipped", None)
    assert estimate.total_bytes == 4096 and not estimate.complete
    assert "estimate incomplete after 2 s" in estimate.summary and "/srv/huge, /srv/next" in estimate.summary


async def test_transport_timeout_is_reported_as_incomplete() -> None:
    class Stuck:
        name = "stuck"

        async def run(self, argv, **kwargs) -> CommandResult:
            raise CommandTimeout("`sh` did not finish within 16 s on stuck and was stopped.")

        async def close(self) -> None:
            return None

    estimate = await disk.estimate_size(ProbeContext(Stuck()), ["/a"], time_limit=1)
    assert estimate.paths[0].state == "timeout" and estimate.paths[0].bytes is None
    assert "estimate incomplete after 1 s" in estimate.summary


# --- parsers ---------------------------------------------------------------------------------------------------


def test_findmnt_parser_on_recorded_outputs() -> None:
    sub = disk.parse_findmnt((RECORDED / "findmnt_btrfs_subvol.json").read_text(), "/srv/btrfs/sub/plain")
    assert (sub.target, sub.source, sub.fsroot, sub.fstype) == ("/srv/btrfs/sub", "/dev/loop0", "/data", "btrfs")
    assert (sub.size_bytes, sub.avail_bytes) == (314572800, 229638144)
    old = disk.parse_findmnt((RECORDED / "findmnt_old_string_numbers.json").read_text(), "/home")
    assert (old.size_bytes, old.avail_bytes) == (41956900864, 23011430400)
    assert old.source == "/dev/mapper/ubuntu--vg-ubuntu--lv"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        '{\n   "filesystems": [\n      {\n         "target": "/",\n',  # truncated
        '{"filesystems": []}',
        '{"filesystems": [{"target": "/", "source": "/dev/vda", "fstype": "ext4", "size": "12G", "avail": 1}]}',
        '{"filesystems": [{"target": "/", "source": "/dev/vda", "fstype": "ext4", "size": true, "avail": 1}]}',
        '{"filesystems": [{"target": "/", "fstype": "ext4", "size": 1, "avail": 1}]}',
        '["not", "an", "object"]',
        "TARGET SOURCE FSTYPE\n/ /dev/vda ext4\n",
    ],
)
def test_findmnt_garbage_is_a_sentence(garbage: str) -> None:
    with pytest.raises(ProbeError, match="findmnt"):
        disk.parse_findmnt(garbage, "/x")


def test_df_parser() -> None:
    # This machine's `df -P -B1 -T /tmp` (recorded here), and the same line for a mount point with spaces.
    out = (
        "Filesystem     Type     1-blocks        Used   Available Capacity Mounted on\n"
        "/dev/vda       ext4 270553174016 24591818752 84352475136      23% /\n"
    )
    info = disk.parse_df(out, "/tmp")
    assert (info.source, info.fstype, info.size_bytes, info.avail_bytes, info.target) == (
        "/dev/vda", "ext4", 270553174016, 84352475136, "/",
    )  # fmt: skip
    spaced = disk.parse_df(out.replace("% /\n", "% /mnt/my disk\n"), "/mnt/my disk/x")
    assert spaced.target == "/mnt/my disk"
    for garbage in ("", "Filesystem Type\n", out.replace("84352475136", "80G"), "df: /x: No such file\n"):
        with pytest.raises(ProbeError, match="df printed something unexpected"):
            disk.parse_df(garbage, "/x")


def test_du_parser_rejects_truncated_or_foreign_output() -> None:
    good = "@unit 1\0@start 1\0" + "4096\t/a/b\0" + "8192\t/a\0" + "@done 1 0\0@end\0"
    assert disk.parse_du(good, "", ["/a"], 10).paths[0].bytes == 8192
    for garbage in ("", "8192\t/a\n", good.replace("@end\0", ""), good.replace("4096\t/a/b", "oops")):
        with pytest.raises(ProbeError):
            disk.parse_du(garbage, "", ["/a"], 10)


def test_du_parser_busybox_mode_and_errors() -> None:
    # busybox du: KiB, newline-separated records (names with newlines leave stray lines, which are skipped)
    out = "@unit 1024\0@start 1\0" + "4\t/a/x\n2\t/a/new\nline\n8\t/a\n" + "\0@done 1 0\0@start 2\0\0@done 2 1\0@end\0"
    err = "@path 1\n@path 2\ndu: /b: Permission denied\n"
    estimate = disk.parse_du(out, err, ["/a", "/b"], 10)
    assert estimate.paths[0].bytes == 8 * 1024
    assert (estimate.paths[1].state, estimate.paths[1].unreadable) == ("denied", 1)
