"""LVM: which logical volumes exist, how much room their volume groups have for a snapshot, and whether the LV
holding a given path can be snapshotted.

Commands (both need root: they read device metadata and take LVM's global lock)::

    lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_path,lv_dm_path,lv_size,lv_attr,origin
    vgs --reportformat json --units b --nosuffix -o vg_name,vg_size,vg_free,vg_extent_size

``--reportformat json`` prints every value as a string ("lv_size":"20971520"); ``json_std`` (LVM ≥ 2.03.17)
prints numbers; both parse. lvs prints an empty but valid report *and* fails (status 5) when it may not take
its lock as non-root, so the exit status is checked before the JSON is believed.

A path is on an LV when the filesystem's SOURCE (findmnt) is the LV's ``/dev/mapper/<vg>-<lv>`` name (with '-'
doubled inside names) or its ``/dev/<vg>/<lv>`` link.

Snapshot size rule (a classic, non-thin snapshot stores the origin's blocks that change while it exists; when it
fills up it is invalidated and the backup reading it fails):
  * aim for 20 % of the LV — a backup window rarely rewrites more than that;
  * never more than the VG's free space, rounded down to whole extents (lvcreate would round up and fail);
  * below 10 % of the LV (or under one extent) the snapshot is likely to overflow: the method is unavailable and
    the reason says how much free space is missing.
Thin LVs (attribute 'V') snapshot inside their pool and need no VG space; an LV that is itself a classic
snapshot cannot be snapshotted again.
"""

from __future__ import annotations

import json
from typing import Any

from bot.probes.base import Absent, Model, ProbeContext, ProbeError

LVS_ARGV = (
    "lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
    "-o", "lv_name,vg_name,lv_path,lv_dm_path,lv_size,lv_attr,origin",
)  # fmt: skip
VGS_ARGV = (
    "vgs", "--reportformat", "json", "--units", "b", "--nosuffix",
    "-o", "vg_name,vg_size,vg_free,vg_extent_size",
)  # fmt: skip
TARGET_PERCENT = 20
MINIMUM_PERCENT = 10
_NOT_VG_DIRS = {"disk", "md", "block", "char", "bus", "input", "net", "pts", "shm", "snd", "cpu", "loop", "fd"}
_LV_FIELDS = ("lv_name", "vg_name", "lv_path", "lv_dm_path", "lv_size", "lv_attr", "origin")
_VG_FIELDS = ("vg_name", "vg_size", "vg_free", "vg_extent_size")


class LogicalVolume(Model):
    name: str
    vg: str
    path: str  # /dev/<vg>/<lv> ("" for hidden LVs such as thin pools)
    dm_path: str  # /dev/mapper/<vg>-<lv>, '-' doubled inside names
    size_bytes: int
    attr: str  # lv_attr, e.g. "-wi-ao----"; [0]: s=snapshot, o=origin, V=thin volume, t=thin pool …
    origin: str  # for a snapshot: the LV it was taken of

    @property
    def is_thin(self) -> bool:
        return self.attr[:1] == "V"

    @property
    def is_snapshot(self) -> bool:
        return self.attr[:1] in ("s", "S")


class VolumeGroup(Model):
    name: str
    size_bytes: int
    free_bytes: int
    extent_bytes: int


class LvmReport(Model):
    lvs: tuple[LogicalVolume, ...]
    vgs: tuple[VolumeGroup, ...]


class LvmDecision(Model):
    """Whether the LV holding a path can be snapshotted, and with how much space."""

    available: bool
    reason: str
    lv: LogicalVolume | None = None
    vg: VolumeGroup | None = None
    suggested_size_bytes: int | None = None


def _rows(text: str, kind: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``kind`` ("lv"/"vg") rows of an LVM JSON report, each checked to have ``fields``."""
    try:
        report = json.loads(text)["report"]
        rows = [row for part in report for row in part.get(kind, [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProbeError(
            f"`{kind}s` printed something that is not an LVM JSON report (starts with {text.strip()[:60]!r})."
        ) from None
    for row in rows:
        if not isinstance(row, dict) or any(f not in row for f in fields):
            raise ProbeError(f"`{kind}s` left out columns the bot asked for ({', '.join(fields)}).")
    return rows


def _int(value: Any, what: str) -> int:
    """LVM byte counts: "20971520" (json), 20971520 (json_std), tolerating a trailing "B" unit."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().removesuffix("B")
    if text.isdigit():
        return int(text)
    raise ProbeError(f"LVM printed {value!r} for {what}, not a number of bytes (were --units b --nosuffix ignored?).")


def parse_lvs(text: str) -> tuple[LogicalVolume, ...]:
    return tuple(
        LogicalVolume(
            name=str(r["lv_name"]),
            vg=str(r["vg_name"]),
            path=str(r["lv_path"]),
            dm_path=str(r["lv_dm_path"]),
            size_bytes=_int(r["lv_size"], "an LV size"),
            attr=str(r["lv_attr"]),
            origin=str(r["origin"]),
        )
        for r in _rows(text, "lv", _LV_FIELDS)
    )


def parse_vgs(text: str) -> tuple[VolumeGroup, ...]:
    return tuple(
        VolumeGroup(
            name=str(r["vg_name"]),
            size_bytes=_int(r["vg_size"], "a VG size"),
            free_bytes=_int(r["vg_free"], "a VG's free space"),
            extent_bytes=_int(r["vg_extent_size"], "an extent size"),
        )
        for r in _rows(text, "vg", _VG_FIELDS)
    )


def may_be_lv(source: str) -> bool:
    """Could this device be an LV? Saves running lvs (and asking for root) for plain partitions and pseudo-fs."""
    if source.startswith(("/dev/mapper/", "/dev/dm-")):
        return True
    parts = source.split("/")
    return len(parts) == 4 and parts[:2] == ["", "dev"] and parts[2] not in _NOT_VG_DIRS and all(parts[2:])


def lv_for_source(source: str, lvs: tuple[LogicalVolume, ...]) -> LogicalVolume | None:
    """The LV whose device is ``source`` (findmnt's SOURCE without any "[fsroot]" suffix)."""
    for lv in lvs:
        if source and source in (lv.dm_path, lv.path):
            return lv
    return None


def suggested_size(lv: LogicalVolume, vg: VolumeGroup) -> int:
    """20 % of the LV, at most the VG's free space, rounded down to whole extents (see module docstring)."""
    wanted = min(lv.size_bytes * TARGET_PERCENT // 100, vg.free_bytes)
    extent = max(vg.extent_bytes, 1)
    return wanted // extent * extent


def decide(source: str, report: LvmReport) -> LvmDecision:
    """Can the filesystem on ``source`` be snapshotted with LVM? (pure)"""
    lv = lv_for_source(source, report.lvs)
    if lv is None:
        return LvmDecision(available=False, reason=f"{source} is not an LVM logical volume.")
    vg = next((v for v in report.vgs if v.name == lv.vg), None)
    if lv.is_snapshot:
        return LvmDecision(available=False, reason=f"{lv.vg}/{lv.name} is itself a snapshot of {lv.origin}.", lv=lv)
    if lv.is_thin:
        reason = f"{lv.vg}/{lv.name} is a thin volume: a thin snapshot needs no reserved space in the VG."
        return LvmDecision(available=True, reason=reason, lv=lv, vg=vg)
    if vg is None:
        return LvmDecision(available=False, reason=f"vgs did not list the volume group {lv.vg}.", lv=lv)
    return _sized(lv, vg)


def _sized(lv: LogicalVolume, vg: VolumeGroup) -> LvmDecision:
    size = suggested_size(lv, vg)
    minimum = max(lv.size_bytes * MINIMUM_PERCENT // 100, vg.extent_bytes)
    name = f"{lv.vg}/{lv.name}"
    if size < minimum:
        return LvmDecision(
            available=False,
            reason=(
                f"The LV {name} ({_mib(lv.size_bytes)}) is in volume group {vg.name}, which has only "
                f"{_mib(vg.free_bytes)} free; a snapshot needs at least {_mib(minimum)} ({MINIMUM_PERCENT} % of "
                "the LV) so it does not overflow during the backup. Add a disk to the VG (vgextend) or shrink "
                "another LV."
            ),
            lv=lv,
            vg=vg,
        )
    return LvmDecision(
        available=True,
        reason=(
            f"{name} can be snapshotted: volume group {vg.name} has {_mib(vg.free_bytes)} free; suggested snapshot "
            f"size {_mib(size)} ({TARGET_PERCENT} % of the LV, bounded by the free space)."
        ),
        lv=lv,
        vg=vg,
        suggested_size_bytes=size,
    )


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _lvm_failure(what: str, err: str, exit_status: int | None) -> ProbeError:
    """A sentence for a failed lvs/vgs: lack of privileges is the usual cause and is named as such."""
    lines = [line.strip() for line in err.splitlines() if line.strip() and "leaked on" not in line]
    if any(k in err for k in ("Permission denied", "non-root", "password is required", "not permitted")):
        return ProbeError(
            f"`{what}` needs root to read LVM metadata and the login user is not root and has no passwordless sudo; "
            "connect as root or allow passwordless sudo to use LVM snapshots."
        )
    tail = f": {lines[-1][:200]}" if lines else ""
    return ProbeError(f"`{what}` failed with status {exit_status}{tail}.")


async def _report(ctx: ProbeContext, argv: tuple[str, ...]) -> str:
    result = await ctx.run(argv, what=argv[0], privileged=True, check=False)
    if result.exit_status == 127:
        raise Absent(argv[0])
    if not result.ok:
        raise _lvm_failure(argv[0], result.err, result.exit_status)
    return result.out


async def probe(ctx: ProbeContext) -> LvmReport:
    """Volumes and volume groups; Absent when lvm2 is not installed, ProbeError when they cannot be read."""
    if not ctx.privileged:
        raise ProbeError(
            "Listing LVM volumes needs root (lvs/vgs read device metadata) and the login user is neither root nor "
            "allowed passwordless sudo; connect as root or allow passwordless sudo to use LVM snapshots."
        )
    lvs = parse_lvs(await _report(ctx, LVS_ARGV))
    vgs = parse_vgs(await _report(ctx, VGS_ARGV))
    return LvmReport(lvs=lvs, vgs=vgs)
