"""The capabilities table: which probes make up a server's capabilities, and how each is called.

Path-specific questions (the size of the paths a person picks, which snapshot method fits a data
directory) are asked by the wizard when it knows the path; the table covers what is worth knowing about
a server up front: borg, the root filesystem and its snapshot options, LVM, each database engine, Docker.
"""

from __future__ import annotations

from bot.probes import borg, disk, docker, docker_models, mongodb, mysql, postgresql, snapshot_lvm, snapshots
from bot.probes.capabilities import ProbeSpec

ROOT = "/"


async def _borg(ctx):
    return await borg.probe(ctx)


async def _disk(ctx):
    return await disk.probe(ctx, ROOT)


async def _snapshots(ctx):
    return await snapshots.probe(ctx, ROOT)


def default_specs() -> list[ProbeSpec]:
    """Every probe run for a server's capabilities (the system probe runs first, separately)."""
    return [
        ProbeSpec("borg", _borg, borg.BorgInfo, timeout=30.0),
        ProbeSpec("disk", _disk, disk.MountInfo, timeout=30.0),
        ProbeSpec("snapshots", _snapshots, snapshots.SnapshotMethods, timeout=60.0),
        ProbeSpec("lvm", snapshot_lvm.probe, snapshot_lvm.LvmReport, timeout=30.0),
        ProbeSpec("mysql", mysql.probe, mysql.MySQLInfo, timeout=60.0),
        ProbeSpec("postgresql", postgresql.probe, postgresql.PgInfo, timeout=60.0),
        ProbeSpec("mongodb", mongodb.probe, mongodb.MongoInfo, timeout=60.0),
        ProbeSpec(
            "docker",
            docker.probe,
            docker_models.DockerFacts,
            timeout=docker.PROBE_TIMEOUT,
            absent_means=docker.ABSENT_MEANS,
        ),
    ]
