"""A private Docker daemon (Debian's docker.io) with a tiny busybox image, for container-source tests.

Why a private daemon: no Docker engine runs on this machine kind, and a shared one would mix state between test
sessions. This one has its own ``--data-root``, ``--exec-root``, ``--pidfile``, unix socket and an empty
``--config-file``, ``--storage-driver=vfs`` (no overlay needed), ``--iptables=false --bridge=none`` (no network
setup; containers run with ``--network none``). There is no registry here, so the image is imported from a rootfs
made of Debian's ``busybox-static`` (``/bin/busybox`` + a symlink per applet): ``bbtest/busybox:1``.

Teardown removes its containers, stops the daemon (which stops the containerd it started), kills any process
still referring to its temp dir (containerd shims re-parent to init), unmounts what it left and removes the dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.common import (
    descendants,
    kill_pids,
    make_workdir,
    pids_referencing,
    reap_stale,
    require_root,
    require_tool,
    run,
    stop_process_tree,
    tail,
    unmount_all_under,
)

IMAGE = "bbtest/busybox:1"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class DockerEnv:
    """A running private dockerd. ``cli("ps", "-a")`` runs the docker CLI against it (raises on failure unless
    ``check=False``)."""

    host_url: str  # unix:///tmp/bw-harness-…/docker.sock (DOCKER_HOST value)
    image: str  # "bbtest/busybox:1"
    cli: Callable[..., subprocess.CompletedProcess[str]] = field(repr=False)
    env: dict[str, str] = field(repr=False, default_factory=dict)  # DOCKER_HOST + DOCKER_CONFIG for own commands
    docker_bin: str = "docker"
    data_root: Path | None = None


def _docker_cli() -> str:
    # Prefer docker.io's client (same release as its dockerd); this machine kind also has a newer one in
    # /usr/local/bin, which works too thanks to API version negotiation.
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return require_tool("docker", "docker.io")


def _build_rootfs(rootfs: Path, busybox: str) -> None:
    for sub in ("bin", "tmp", "data", "etc", "root", "proc", "sys", "dev"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = run([busybox, "--list"]).stdout.split()
    for applet in {*applets, "sh", "ls", "cat", "tar", "sleep", "echo", "mkdir", "rm"}:
        link = rootfs / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerEnv]:
    """A private dockerd for the session with the ``bbtest/busybox:1`` image; skips with dockerd's own words if
    it cannot start here."""
    require_root("docker_daemon (dockerd)")
    dockerd = require_tool("dockerd", "docker.io")
    docker = _docker_cli()
    busybox = require_tool("busybox", "busybox-static", path="/bin/busybox")
    reap_stale()
    workdir = make_workdir("docker")
    sock = workdir / "docker.sock"
    host_url = f"unix://{sock}"
    env = {**os.environ, "DOCKER_HOST": host_url, "DOCKER_CONFIG": os.fspath(workdir / "cli")}
    env.pop("DOCKER_CONTEXT", None)
    (workdir / "cli").mkdir()
    (workdir / "daemon.json").write_text("{}\n")
    log = workdir / "dockerd.log"

    def cli(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run([docker, *args], env=env, check=check, input=input, timeout=timeout)

    argv = [
        dockerd,
        "--config-file", os.fspath(workdir / "daemon.json"),
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--data-root", os.fspath(workdir / "data"),
        "--exec-root", os.fspath(workdir / "exec"),
        "--pidfile", os.fspath(workdir / "docker.pid"),
        "-H", host_url,
    ]  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    errors: list[str] = []
    try:
        with log.open("ab") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            info = cli("info", check=False, timeout=30)
            if info.returncode == 0:
                break
            time.sleep(0.3)
        if info is None or info.returncode != 0:
            code = proc.poll()
            state = f"exited with {code}" if code is not None else f"not answering after {START_TIMEOUT:.0f}s"
            pytest.skip(f"dockerd cannot start here ({state}):\n{tail(log, 2000)}")
        rootfs = workdir / "rootfs"
        _build_rootfs(rootfs, busybox)
        tar = subprocess.Popen(["tar", "-C", os.fspath(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker, "import", "-", IMAGE], stdin=tar.stdout, env=env, capture_output=True, text=True, check=False
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr.strip()} (tar exit {tar.returncode})")
        shutil.rmtree(rootfs, ignore_errors=True)
        yield DockerEnv(
            host_url=host_url,
            image=IMAGE,
            cli=cli,
            env={"DOCKER_HOST": host_url, "DOCKER_CONFIG": os.fspath(workdir / "cli")},
            docker_bin=docker,
            data_root=workdir / "data",
        )
    finally:
        if proc is not None and proc.poll() is None:
            ids = cli("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                removed = cli("rm", "-f", "-v", *ids, check=False, timeout=120)
                if removed.returncode != 0:
                    errors.append(f"docker rm -f: {removed.stderr.strip()}")
            family = descendants(proc.pid)
            proc.terminate()  # dockerd stops the containerd it started on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_process_tree(proc)
            kill_pids(family, timeout=10)
        kill_pids(pids_referencing(workdir), timeout=10)
        errors += unmount_all_under(workdir)
        if not errors:
            shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise RuntimeError(f"docker teardown left {workdir}: {errors}")
