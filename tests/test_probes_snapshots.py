"""Snapshot methods for a path: Btrfs for real (loop mount, over real sshd), LVM with real lvs/vgs on a loop-device
VG, ZFS and LVM decisions on recorded real outputs.

What is real and what is recorded, and why:
  * Btrfs: everything real — subvolumes created in the ``btrfs_mount`` fixture, commands run over sshd.
  * LVM: ``vgs``/``lvs`` run for real over sshd against the ``lvm_vg`` fixture's VG. This kernel has no
    device-mapper, so LVs cannot be activated or mounted and no path can really sit on one; LVs are created
    metadata-only (``lvcreate --driverloaded n --activate n``) to get real ``lvs`` output with LVs, and the
    path → LV decision is fed the LV's real device name as the mount source. The recorded files
    ``lvm_*_two_vgs.json`` (see their ``.source``) were made the same way and cover several VGs and a full VG.
  * ZFS: there is no ZFS module here; ``zfs_list_ubuntu_root.tsv`` is a real public listing of an Ubuntu
    ZFS-on-root system transcribed into ``zfs list -H -p`` form (see its ``.source``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.probes import snapshot_btrfs, snapshot_lvm, snapshot_zfs, snapshots
from bot.probes.base import ProbeError
from bot.probes.disk import MountInfo

RECORDED = Path(__file__).parent / "data" / "probes"


def sh(*argv: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


def mount(source: str, fstype: str, *, path: str = "/data/x", target: str = "/data", fsroot: str = "/") -> MountInfo:
    return MountInfo(path=path, target=target, source=source, fsroot=fsroot, fstype=fstype, size_bytes=None,
                     avail_bytes=None, via="findmnt")  # fmt: skip


def only_tools(where: Path, *names: str) -> dict[str, str]:
    """env for a server that has only these programs (symlinks to the real ones)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        real = next(Path(d) / name for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin") if (Path(d) / name).exists())
        (where / name).symlink_to(real)
    return {"PATH": os.fspath(where)}


# --- Btrfs, real -----------------------------------------------------------------------------------------------


@pytest.fixture
def btrfs_tree(btrfs_mount) -> Iterator[Path]:
    """<mount>/snap-XXXX (subvolume) with plain/deeper (directories) and nested (a subvolume inside it)."""
    top = btrfs_mount.unique("snap")
    sh("btrfs", "subvolume", "create", top)
    (top / "plain" / "deeper").mkdir(parents=True)
    sh("btrfs", "subvolume", "create", top / "nested")
    yield top
    sh("btrfs", "subvolume", "delete", top / "nested")
    sh("btrfs", "subvolume", "delete", top)


async def test_btrfs_subvolume_and_plain_directory(sshd_host, ctx_for, btrfs_tree) -> None:
    ctx = ctx_for(sshd_host)
    top = await snapshots.methods_for_path(ctx, os.fspath(btrfs_tree))
    assert top.recommended == "btrfs" and top.get("btrfs").target == os.fspath(btrfs_tree)
    assert "is a subvolume" in top.get("btrfs").reason
    assert top.get("btrfs").warnings and os.fspath(btrfs_tree / "nested") in top.get("btrfs").warnings[0]
    assert not top.get("zfs").available and "not on ZFS" in top.get("zfs").reason
    assert not top.get("lvm").available and "not an LVM logical volume" in top.get("lvm").reason

    plain = await snapshots.methods_for_path(ctx, os.fspath(btrfs_tree / "plain" / "deeper"))
    assert plain.recommended == "btrfs" and plain.get("btrfs").target == os.fspath(btrfs_tree)
    assert f"is inside the subvolume {btrfs_tree}" in plain.get("btrfs").reason
    assert plain.get("btrfs").warnings == ()  # the nested subvolume is not under plain/deeper

    nested = await snapshots.methods_for_path(ctx, os.fspath(btrfs_tree / "nested"))
    assert nested.get("btrfs").target == os.fspath(btrfs_tree / "nested")


async def test_btrfs_location_is_by_inode_256(sshd_host, ctx_for, btrfs_mount, btrfs_tree) -> None:
    ctx = ctx_for(sshd_host)
    root = await snapshot_btrfs.locate(ctx, os.fspath(btrfs_mount))
    assert (root.subvolume, root.is_subvolume) == (str(btrfs_mount), True)  # the top level (id 5) is one too
    deeper = await snapshot_btrfs.locate(ctx, os.fspath(btrfs_tree / "plain" / "deeper"))
    assert (deeper.subvolume, deeper.is_subvolume) == (os.fspath(btrfs_tree), False)
    assert (btrfs_tree / "plain").stat().st_ino != 256 and btrfs_tree.stat().st_ino == 256
    with pytest.raises(ProbeError, match="does not exist"):
        await snapshot_btrfs.locate(ctx, os.fspath(btrfs_tree / "gone"))


async def test_btrfs_subvolume_mounted_by_itself_maps_nested_paths(sshd_host, ctx_for, btrfs_mount, btrfs_tree,
                                                                   tmp_path) -> None:  # fmt: skip
    where = tmp_path / "sub mount"
    where.mkdir()
    sh("mount", "-t", "btrfs", "-o", f"subvol=/{btrfs_tree.name}", btrfs_mount.device, where)
    try:
        result = await snapshots.methods_for_path(ctx_for(sshd_host), os.fspath(where))
    finally:
        sh("umount", where)
    assert result.mount.fsroot == f"/{btrfs_tree.name}"
    verdict = result.get("btrfs")
    assert verdict.available and verdict.target == os.fspath(where)
    assert os.fspath(where / "nested") in verdict.warnings[0]  # listed as "<name>/nested", mapped through fsroot


async def test_path_on_another_filesystem_has_no_method(sshd_host, ctx_for, tmp_path) -> None:
    result = await snapshots.methods_for_path(ctx_for(sshd_host), os.fspath(tmp_path))
    if result.mount.fstype in ("btrfs", "zfs"):
        pytest.skip(f"the temp dir itself is on {result.mount.fstype} here")
    assert result.recommended is None
    assert [m.available for m in result.methods] == [False, False, False]
    assert "not on Btrfs" in result.get("btrfs").reason
    assert result.summary == (
        f"No snapshot method can cover {tmp_path}: without a snapshot, files changing during the backup may be "
        "captured inconsistently."
    )


async def test_missing_tools_make_methods_unavailable_not_errors(sshd_host, ctx_for, btrfs_tree, tmp_path) -> None:
    # A server with btrfs mounted but without btrfs-progs (and without lvm2, zfs): PATH holds only basic tools.
    ctx = ctx_for(sshd_host, env=only_tools(tmp_path / "bin", "findmnt", "ls", "sh", "stat", "readlink", "dirname"))
    result = await snapshots.methods_for_path(ctx, os.fspath(btrfs_tree))
    assert result.recommended is None
    assert "btrfs-progs is not installed" in result.get("btrfs").reason
    lvm = await snapshots.lvm_verdict(ctx, mount("/dev/mapper/vg0-data", "ext4"))
    assert not lvm.available and "lvm2 is not installed (no `lvs`)" in lvm.reason
    zfs = await snapshots.zfs_verdict(ctx, mount("tank/data", "zfs"))
    assert not zfs.available and "the `zfs` command is not installed" in zfs.reason


async def test_btrfs_without_privileges_is_a_sentence(sshd_host, ctx_for, btrfs_tree) -> None:
    verdict = await snapshots.btrfs_verdict(
        ctx_for(sshd_host, privileged=False), mount("/dev/loop9", "btrfs", path=os.fspath(btrfs_tree))
    )
    assert not verdict.available
    assert "needs root" in verdict.reason and f"in the Btrfs subvolume {btrfs_tree}" in verdict.reason


def test_btrfs_parsers_on_recorded_output() -> None:
    top = snapshot_btrfs.parse_subvolume_list((RECORDED / "btrfs_subvolume_list_o_top.txt").read_text())
    assert [(s.id, s.top_level, s.path) for s in top] == [(256, 5, "data"), (258, 5, "with space"), (259, 5, "snap1")]
    data = snapshot_btrfs.parse_subvolume_list((RECORDED / "btrfs_subvolume_list_o_data.txt").read_text())
    # Mounted with subvol=data at /srv/btrfs/sub (findmnt_btrfs_subvol.json): "data/nested" is /srv/btrfs/sub/nested.
    assert snapshot_btrfs.nested_under("/srv/btrfs/sub", data, target="/srv/btrfs/sub", fsroot="/data") == (
        "/srv/btrfs/sub/nested",
    )
    assert snapshot_btrfs.nested_under("/srv/btrfs/sub/plain", data, target="/srv/btrfs/sub", fsroot="/data") == ()
    assert snapshot_btrfs.absolute_path("other/x", target="/srv/btrfs/sub", fsroot="/data") is None
    listed_s = "ID 259 gen 7 cgen 7 top level 5 otime 2026-11-26 05:55:02 path snap1\n"  # `list -s` format
    assert snapshot_btrfs.parse_subvolume_list(listed_s)[0].path == "snap1"


@pytest.mark.parametrize("garbage", ["ID x gen 7 top level 5 path a\n", "ERROR: not a btrfs filesystem\n"])
def test_btrfs_list_garbage(garbage: str) -> None:
    with pytest.raises(ProbeError, match="cannot read"):
        snapshot_btrfs.parse_subvolume_list(garbage)


@pytest.mark.parametrize("garbage", ["", "@resolved /a\0" + "257\0", "@resolved /a\0x\0", "junk"])
def test_btrfs_walk_garbage(garbage: str) -> None:
    with pytest.raises(ProbeError):
        snapshot_btrfs.parse_walk(garbage, "/a")


# --- LVM -------------------------------------------------------------------------------------------------------


async def test_lvm_real_vg_and_metadata_only_lvs(sshd_host, ctx_for, lvm_vg) -> None:
    ctx = ctx_for(sshd_host, env=dict(lvm_vg.lvm_env))
    report = await snapshot_lvm.probe(ctx)
    (vg,) = [v for v in report.vgs if v.name == lvm_vg.vg_name]
    assert vg.free_bytes == vg.size_bytes > 0 and vg.size_bytes % vg.extent_bytes == 0  # no LVs yet
    assert not [lv for lv in report.lvs if lv.vg == lvm_vg.vg_name]
    name = f"bw-lv-{os.getpid()}"
    lvm_vg.run("lvcreate", "--driverloaded", "n", "--activate", "n", "--zero", "n", "-L", "20M", "-n", name,
               lvm_vg.vg_name)  # fmt: skip
    try:
        report = await snapshot_lvm.probe(ctx)
    finally:
        lvm_vg.run("lvremove", "--driverloaded", "n", "-y", f"{lvm_vg.vg_name}/{name}")
    (lv,) = [lv for lv in report.lvs if lv.vg == lvm_vg.vg_name]
    assert (lv.name, lv.size_bytes, lv.path) == (name, 20 * 2**20, f"/dev/{lvm_vg.vg_name}/{name}")
    assert lv.dm_path == f"/dev/mapper/{lvm_vg.vg_name}-{name.replace('-', '--')}"
    (vg,) = [v for v in report.vgs if v.name == lvm_vg.vg_name]
    assert vg.free_bytes == vg.size_bytes - 20 * 2**20
    decision = snapshot_lvm.decide(lv.dm_path, report)
    assert decision.available and decision.suggested_size_bytes == 4 * 2**20  # 20 % of 20 MiB, whole extents


async def test_lvm_non_root_without_sudo_is_a_sentence(make_sshd, ctx_for) -> None:
    host = make_sshd("lvmuser", nonroot=True)
    # Told it is privileged (it is not), lvs really runs as the user and fails on LVM's lock.
    with pytest.raises(ProbeError) as err:
        await snapshot_lvm.probe(ctx_for(host, privileged=True))
    assert "needs root" in str(err.value) and "passwordless sudo" in str(err.value)
    # Knowing it is not privileged, the verdict says so without running anything.
    verdict = await snapshots.lvm_verdict(ctx_for(host, privileged=False), mount("/dev/vg0/data", "ext4"))
    assert not verdict.available and "needs root" in verdict.reason


def recorded_lvm() -> snapshot_lvm.LvmReport:
    return snapshot_lvm.LvmReport(
        lvs=snapshot_lvm.parse_lvs((RECORDED / "lvm_lvs_two_vgs.json").read_text()),
        vgs=snapshot_lvm.parse_vgs((RECORDED / "lvm_vgs_two_vgs.json").read_text()),
    )


def test_lvm_parsers_on_recorded_output() -> None:
    report = recorded_lvm()
    assert [(lv.vg, lv.name, lv.size_bytes) for lv in report.lvs] == [
        ("archive-vg", "archive", 28 * 2**20), ("data-vg", "db", 24 * 2**20), ("data-vg", "root", 8 * 2**20),
        ("data-vg", "www-data", 20 * 2**20),
    ]  # fmt: skip
    assert report.lvs[3].dm_path == "/dev/mapper/data--vg-www--data"
    assert [(vg.name, vg.free_bytes, vg.extent_bytes) for vg in report.vgs] == [
        ("archive-vg", 0, 4 * 2**20), ("data-vg", 8 * 2**20, 4 * 2**20),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "available", "suggested", "words"),
    [
        ("/dev/mapper/data--vg-www--data", True, 4 * 2**20, "suggested snapshot size 4 MiB"),
        ("/dev/data-vg/db", True, 4 * 2**20, "has 8 MiB free"),  # 20 % = 4.8 MiB, rounded down to an extent
        ("/dev/mapper/archive--vg-archive", False, None, "which has only 0 MiB free"),
        ("/dev/mapper/cryptroot", False, None, "not an LVM logical volume"),
    ],
)
def test_lvm_path_to_lv_decision(source: str, available: bool, suggested: int | None, words: str) -> None:
    decision = snapshot_lvm.decide(source, recorded_lvm())
    assert (decision.available, decision.suggested_size_bytes) == (available, suggested)
    assert words in decision.reason


@pytest.mark.parametrize(
    ("vg_free", "available", "suggested"),
    [
        (100 * 2**30, True, 2 * 2**30),  # 20 % of the 10 GiB LV
        (1536 * 2**20, True, 1536 * 2**20),  # bounded by the VG's free space
        (1536 * 2**20 + 3 * 2**20, True, 1536 * 2**20),  # … rounded down to whole 4 MiB extents
        (1024 * 2**20, True, 1024 * 2**20),  # exactly the 10 % minimum
        (1020 * 2**20, False, None),  # below it: likely to overflow during the backup
    ],
)
def test_lvm_snapshot_size_rule(vg_free: int, available: bool, suggested: int | None) -> None:
    lv = snapshot_lvm.LogicalVolume(name="data", vg="vg0", path="/dev/vg0/data", dm_path="/dev/mapper/vg0-data",
                                    size_bytes=10 * 2**30, attr="-wi-ao----", origin="")  # fmt: skip
    vg = snapshot_lvm.VolumeGroup(name="vg0", size_bytes=200 * 2**30, free_bytes=vg_free, extent_bytes=4 * 2**20)
    decision = snapshot_lvm.decide("/dev/mapper/vg0-data", snapshot_lvm.LvmReport(lvs=(lv,), vgs=(vg,)))
    assert (decision.available, decision.suggested_size_bytes) == (available, suggested)


def test_lvm_thin_and_snapshot_volumes() -> None:
    # Constructed rows in the recorded format, with the lv_attr values LVM uses for thin volumes ('V') and
    # classic snapshots ('s'), which this machine cannot create (no device-mapper).
    lvs = snapshot_lvm.parse_lvs(
        '{"report": [{"lv": ['
        '{"lv_name":"thin1", "vg_name":"vg0", "lv_path":"/dev/vg0/thin1", "lv_dm_path":"/dev/mapper/vg0-thin1", '
        '"lv_size":"1073741824", "lv_attr":"Vwi-aotz--", "origin":""},'
        '{"lv_name":"snap", "vg_name":"vg0", "lv_path":"/dev/vg0/snap", "lv_dm_path":"/dev/mapper/vg0-snap", '
        '"lv_size":1073741824, "lv_attr":"swi-a-s---", "origin":"root"}]}]}'
    )
    report = snapshot_lvm.LvmReport(lvs=lvs, vgs=())
    assert snapshot_lvm.decide("/dev/mapper/vg0-thin1", report).available
    snap = snapshot_lvm.decide("/dev/vg0/snap", report)
    assert not snap.available and "itself a snapshot of root" in snap.reason


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        '  {\n      "report": [\n          {\n              "lv": [\n',  # truncated
        '{"report": [{"lv": [{"lv_name": "a", "vg_name": "b"}]}]}',  # columns missing
        '{"report": [{"lv": [{"lv_name":"a", "vg_name":"b", "lv_path":"", "lv_dm_path":"", "lv_size":"12.00g", '
        '"lv_attr":"-wi-a-----", "origin":""}]}]}',  # --units b --nosuffix ignored
        '{"report": "nope"}',
    ],
)
def test_lvm_garbage_is_a_sentence(garbage: str) -> None:
    with pytest.raises(ProbeError):
        snapshot_lvm.parse_lvs(garbage)


def test_may_be_lv() -> None:
    assert snapshot_lvm.may_be_lv("/dev/mapper/vg-lv") and snapshot_lvm.may_be_lv("/dev/vg0/root")
    for source in ("/dev/vda1", "/dev/md/0", "/dev/disk/by-uuid", "tmpfs", "rpool/ROOT/x", "/dev/loop0"):
        assert not snapshot_lvm.may_be_lv(source), source


# --- ZFS (recorded) --------------------------------------------------------------------------------------------


def recorded_zfs() -> tuple[snapshot_zfs.Dataset, ...]:
    return snapshot_zfs.parse_zfs_list((RECORDED / "zfs_list_ubuntu_root.tsv").read_text())


@pytest.mark.parametrize(
    ("path", "dataset"),
    [
        ("/var/lib/apt/lists", "rpool/ROOT/ubuntu_l7y21m/var/lib/apt"),
        ("/var/lib/apt", "rpool/ROOT/ubuntu_l7y21m/var/lib/apt"),
        ("/var/lib/aptitude", "rpool/ROOT/ubuntu_l7y21m/var/lib"),  # a prefix by characters, not by directory
        ("/home/me/Documents", "rpool/USERDATA/me_2u9hr7"),
        ("/etc/ssh", "rpool/ROOT/ubuntu_l7y21m"),  # not rpool nor rpool/USERDATA: they share "/" but are unmounted
        ("/usr/bin", "rpool/ROOT/ubuntu_l7y21m"),  # …/usr is canmount=off: its files live in the root dataset
        ("/boot/grub", "bpool/BOOT/ubuntu_l7y21m"),
    ],
)
def test_zfs_longest_mounted_prefix(path: str, dataset: str) -> None:
    found = snapshot_zfs.dataset_for_path(path, recorded_zfs())
    assert found is not None and found.name == dataset


def test_zfs_findmnt_source_wins_and_places_legacy_datasets() -> None:
    legacy = "tank/db\tlegacy\t1048576\t2097152\tfilesystem\tyes\n"
    datasets = snapshot_zfs.parse_zfs_list((RECORDED / "zfs_list_ubuntu_root.tsv").read_text() + legacy)
    assert snapshot_zfs.dataset_by_prefix("/var/lib/mysql", datasets).name == "rpool/ROOT/ubuntu_l7y21m/var/lib"
    decision = snapshot_zfs.decide("/var/lib/mysql", datasets, fstype="zfs", source="tank/db")
    assert decision.available and decision.dataset.name == "tank/db" and "through /etc/fstab" in decision.reason
    on_ext4 = snapshot_zfs.decide("/var/lib/mysql", datasets, fstype="ext4", source="/dev/sda1")
    assert not on_ext4.available and on_ext4.reason == "/var/lib/mysql is not on a ZFS dataset."
    unknown = snapshot_zfs.decide("/x", datasets, fstype="zfs", source="other/pool")
    assert not unknown.available and "does not show other/pool" in unknown.reason


def test_zfs_parser_skips_none_and_reads_bytes() -> None:
    datasets = {d.name: d for d in recorded_zfs()}
    assert len(datasets) == 24 and datasets["bpool/BOOT"].mount_path is None
    assert datasets["rpool/ROOT/ubuntu_l7y21m/var/log"].used_bytes == 26843546
    assert datasets["rpool"].mounted is False


@pytest.mark.parametrize(
    "garbage",
    [
        "rpool\t/\t1\t2\tfilesystem\n",  # a column missing
        "rpool\t/\t1.5G\t2\tfilesystem\tyes\n",  # -p ignored
        "NAME   USED  AVAIL  REFER  MOUNTPOINT\nrpool  1G  2G  96K  /\n",  # -H ignored
    ],
)
def test_zfs_garbage_is_a_sentence(garbage: str) -> None:
    with pytest.raises(ProbeError, match="zfs list"):
        snapshot_zfs.parse_zfs_list(garbage)


def test_recommendation_prefers_native_snapshots() -> None:
    on_btrfs_on_lvm = mount("/dev/mapper/vg0-data", "btrfs")
    verdicts = (
        snapshots.MethodVerdict(method="lvm", available=True, reason="lvm ok", target="/dev/vg0/data"),
        snapshots.MethodVerdict(method="zfs", available=False, reason="not on ZFS"),
        snapshots.MethodVerdict(method="btrfs", available=True, reason="btrfs ok", target="/data"),
    )
    combined = snapshots.combine(on_btrfs_on_lvm, verdicts)
    assert combined.recommended == "btrfs" and [m.method for m in combined.methods] == ["btrfs", "zfs", "lvm"]
    only_lvm = snapshots.combine(on_btrfs_on_lvm, (verdicts[0], verdicts[1]))
    assert only_lvm.recommended == "lvm"
    assert only_lvm.summary.startswith("Recommended: LVM snapshot of /dev/vg0/data.")
    assert snapshots.SnapshotMethods.model_validate_json(combined.model_dump_json()) == combined
