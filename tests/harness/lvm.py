"""Real LVM metadata on a loop device: ``pvcreate``/``vgcreate`` and real ``pvs``/``vgs``/``lvs`` output.

Why: the LVM snapshot driver's probes and parsers should read what LVM really prints. This kernel has no
device-mapper, so ``lvcreate`` (and any snapshot) fails here — expected, see TESTING.md; the driver's lifecycle is
tested with recorded outputs and for real on Btrfs.

Isolation: every LVM command run with ``LvmVg.lvm_env`` reads a private ``lvm.conf`` (``LVM_SYSTEM_DIR``) whose
filter accepts only this fixture's loop device, with the devices file off, no udev, no lvmetad/lvmpolld/dmeventd,
and locks and metadata backups in the fixture's temp dir — so it never scans or touches another device, and
concurrent test sessions do not share locks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.common import (
    attach_loop,
    detach_loop,
    make_workdir,
    reap_stale,
    require_root,
    require_tool,
    run,
    unique_token,
)

IMAGE_SIZE = "64M"


@dataclass(frozen=True)
class LvmVg:
    """A volume group on one loop-device PV. ``lvm_env`` holds only the overrides; merge it into os.environ."""

    vg_name: str
    pv_device: str
    lvm_env: Mapping[str, str]  # LVM_SYSTEM_DIR (private lvm.conf) + LVM_SUPPRESS_FD_WARNINGS

    def env(self) -> dict[str, str]:
        """Full environment for running an LVM command against this VG only."""
        return {**os.environ, **self.lvm_env}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an LVM command (``lvm_vg.run("vgs", "--reportformat", "json")``) with the isolated config."""
        return run(list(args), env=self.env(), check=check)


def _lvm_conf(device: str, workdir: Path) -> str:
    return f"""\
devices {{
    dir = "/dev"
    scan = [ "/dev" ]
    use_devicesfile = 0
    filter = [ "a|^{device}$|", "r|.*|" ]
    global_filter = [ "a|^{device}$|", "r|.*|" ]
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
}}
global {{
    locking_dir = "{workdir}/lock"
    use_lvmpolld = 0
    event_activation = 0
}}
activation {{
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}}
backup {{
    backup = 1
    backup_dir = "{workdir}/backup"
    archive = 1
    archive_dir = "{workdir}/archive"
}}
"""


@pytest.fixture(scope="session")
def lvm_vg() -> Iterator[LvmVg]:
    """A VG ``bwtestvg_<pid>_<random>`` on a 64 MiB loop device for the session; teardown ``vgremove``,
    ``pvremove``, detaches the loop and deletes the image, also after a failure."""
    require_root("lvm_vg (loop device)")
    for tool in ("pvcreate", "vgcreate", "vgs", "vgremove", "pvremove", "lvmconfig"):
        require_tool(tool, "lvm2")
    reap_stale()
    workdir = make_workdir("lvm")
    device: str | None = None
    vg_name = f"bwtestvg_{unique_token()}"
    errors: list[str] = []
    env: dict[str, str] = {}
    try:
        image = workdir / "pv.img"
        run(["truncate", "-s", IMAGE_SIZE, image])
        device = attach_loop(image)
        etc = workdir / "etc"
        for sub in ("etc", "lock", "backup", "archive"):
            (workdir / sub).mkdir()
        (etc / "lvm.conf").write_text(_lvm_conf(device, workdir))
        env = {"LVM_SYSTEM_DIR": os.fspath(etc), "LVM_SUPPRESS_FD_WARNINGS": "1"}
        full = {**os.environ, **env}
        run(["lvmconfig", "--validate"], env=full)
        run(["pvcreate", "--yes", device], env=full)
        run(["vgcreate", vg_name, device], env=full)
        yield LvmVg(vg_name=vg_name, pv_device=device, lvm_env=env)
    finally:
        if device is not None:
            full = {**os.environ, **env}
            if env:
                for argv in (["vgremove", "--force", "--yes", vg_name], ["pvremove", "--force", "--yes", device]):
                    proc = run(argv, env=full, check=False)
                    if proc.returncode != 0 and "not found" not in proc.stderr and "No PV" not in proc.stderr:
                        errors.append(f"{argv[0]}: {proc.stderr.strip()}")
            err = detach_loop(device)
            if err:
                errors.append(err)
        if not errors:
            shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise RuntimeError(f"lvm teardown left {workdir}: {errors}")
