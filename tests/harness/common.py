"""Shared plumbing for the real-part fixtures: commands, temp dirs, ports, process trees, mounts, loop devices.

Every fixture in this package puts what it creates under one temp dir named
``bw-harness-<pytest pid>-<part>-<random>`` so that a later run can recognise the leftovers of a run that was
killed before its teardown (the pid is dead) and remove them, without touching what a concurrent pytest session
on the same machine still uses (its pid is alive). See :func:`reap_stale`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest

PREFIX = "bw-harness"
# Short, fixed base: dockerd's unix socket lives below it and sun_path is limited to 108 bytes.
TMP_BASE = Path(os.environ.get("BW_HARNESS_TMP", "/tmp"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries its argv, exit code, stdout and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed with exit code {returncode}: {' '.join(map(str, argv))}\n"
            f"--- stdout ---\n{stdout.strip()}\n--- stderr ---\n{stderr.strip()}"
        )


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
    cwd: str | os.PathLike[str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; stdin is /dev/null unless ``input`` is given (never a tty
    prompt that hangs). ``check`` raises :class:`CommandError` with both output streams."""
    args = [os.fspath(a) for a in argv]
    proc = subprocess.run(
        args,
        env=dict(env) if env is not None else None,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        pass_fds=tuple(pass_fds),
    )
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(what: str) -> None:
    """Skip (with the reason) when not root: loop devices, mounts, useradd and dockerd need it."""
    if not is_root():
        pytest.skip(f"{what} needs root (euid is {os.geteuid()})")


def require_tool(name: str, package: str, *, path: str | None = None) -> str:
    """Absolute path of an executable. Missing: a failure under CI (.ci/run installs ``package``, so a missing
    tool there is a broken install, not an environment limit), a skip elsewhere."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if found:
        return found
    message = f"`{name}` not found (Debian package {package}; .ci/run installs it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_borg() -> str | None:
    """The venv's ``borg`` (next to the running interpreter, not resolved through symlinks), else PATH's."""
    candidate = Path(sys.executable).parent / "borg"
    if os.access(candidate, os.X_OK):
        return os.fspath(candidate)
    return shutil.which("borg")


def make_workdir(part: str) -> Path:
    """A fresh private dir ``/tmp/bw-harness-<pid>-<part>-XXXX`` (recognisable by :func:`reap_stale`)."""
    TMP_BASE.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-{part}-", dir=TMP_BASE))


def unique_token(n: int = 4) -> str:
    return f"{os.getpid()}_{os.urandom(n).hex()}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; a tiny race remains, callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_banner(
    host: str, port: int, *, prefix: bytes, timeout: float, alive: Callable[[], bool] | None = None
) -> bytes | None:
    """Connect until the server sends a line starting with ``prefix`` (e.g. b"SSH-2.0-"). Returns the banner or
    None on timeout / when ``alive()`` reports the process gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return None
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.settimeout(2)
                data = sock.recv(256)
                if data.startswith(prefix):
                    return data
        except OSError:
            pass
        time.sleep(0.05)
    return None


def tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-limit:]


# --- processes ------------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, uid, cmdline) for every visible process."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        table[pid] = (ppid, uid, cmdline)
    return table


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (children first found breadth-first), not including ``pid``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _uid, _cmd) in table.items():
        children.setdefault(ppid, []).append(child)
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pids_referencing(path: Path | str) -> list[int]:
    """Processes whose command line mentions ``path`` (our unique temp dir), e.g. containerd shims that dockerd
    leaves re-parented to init, plus all their descendants (a container's processes). Never this process."""
    needle = os.fspath(path)
    me = os.getpid()
    table = _proc_table()
    found = [pid for pid, (_pp, _uid, cmd) in table.items() if needle in cmd and pid != me]
    children: dict[int, list[int]] = {}
    for child, (ppid, _uid, _cmd) in table.items():
        children.setdefault(ppid, []).append(child)
    out: list[int] = []
    todo = list(found)
    while todo:
        pid = todo.pop()
        if pid not in out and pid != me:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def pids_with_env(name: str, value_prefix: str) -> list[int]:
    """Processes whose environment has ``name`` starting with ``value_prefix`` — e.g. everything started in an
    ssh session of one simulated host (``BW_TEST_HOST_DIR=<its workdir>``), even if it daemonized."""
    needle = f"{name}={value_prefix}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if any(item.startswith(needle) for item in env.split(b"\0")):
            found.append(int(entry.name))
    return found


def pids_of_uid(uid: int) -> list[int]:
    return [pid for pid, (_pp, puid, _cmd) in _proc_table().items() if puid == uid]


def kill_pids(pids: Iterable[int], *, timeout: float = 10) -> None:
    """SIGTERM the given pids, wait up to ``timeout``, SIGKILL what is left. Only pids we identified ourselves."""
    pending = {p for p in pids if p != os.getpid()}
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if pid_alive(p) and not _is_zombie(p)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat[stat.rindex(")") + 2 :].startswith("Z")
    except (OSError, ValueError):
        return False


def stop_process_tree(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, timeout: float = 10) -> None:
    """Terminate a Popen'ed process and every descendant (found before the parent dies), then reap it."""
    if proc.poll() is None:
        family = descendants(proc.pid)
        kill_pids([proc.pid, *family], timeout=timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=timeout)


# --- mounts and loop devices ---------------------------------------------------------------------------------


def _unescape_mount(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(path: Path | str) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    root = os.path.realpath(path)
    found: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = _unescape_mount(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_all_under(path: Path | str) -> list[str]:
    """Unmount everything at or below ``path``; falls back to a lazy unmount for a busy mount. Returns errors."""
    errors: list[str] = []
    for point in mounts_under(path):
        proc = run(["umount", point], check=False)
        if proc.returncode != 0:
            lazy = run(["umount", "-l", point], check=False)
            if lazy.returncode != 0:
                errors.append(f"umount {point}: {proc.stderr.strip()} / lazy: {lazy.stderr.strip()}")
    return errors


def loops_backed_by(path_prefix: Path | str) -> list[str]:
    """Loop devices whose backing file lies at or below ``path_prefix`` (read from sysfs)."""
    prefix = os.fspath(path_prefix)
    devices: list[str] = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            target = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if target == prefix or target.startswith(prefix.rstrip("/") + "/"):
            devices.append("/dev/" + backing.parts[3])
    return devices


def detach_loop(device: str) -> str | None:
    """``losetup -d``; retries briefly (the kernel may still hold it just after umount). Returns an error."""
    last = ""
    for _ in range(20):
        proc = run(["losetup", "-d", device], check=False)
        if proc.returncode == 0:
            return None
        last = proc.stderr.strip()
        if "No such device" in last:
            return None
        time.sleep(0.1)
    return f"losetup -d {device}: {last}"


def attach_loop(image: Path) -> str:
    """Attach ``image`` to a free loop device; skips with losetup's own words if the kernel gives none."""
    losetup = require_tool("losetup", "mount")
    proc = run([losetup, "--find", "--show", image], check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device here: `losetup --find --show` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


# --- leftovers of killed runs ----------------------------------------------------------------------------------

_reaped = False


def reap_stale() -> list[str]:
    """Remove what killed earlier pytest runs left behind (dirs ``bw-harness-<dead pid>-*``): their processes,
    mounts, loop devices, throwaway users, then the dirs. Runs once per process; returns what it did."""
    global _reaped
    if _reaped:
        return []
    _reaped = True
    done: list[str] = []
    if not is_root() or not TMP_BASE.is_dir():
        return done
    for entry in TMP_BASE.glob(f"{PREFIX}-*-*"):
        try:
            pid = int(entry.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        kill_pids(pids_referencing(entry) + pids_with_env("BW_TEST_HOST_DIR", os.fspath(entry)), timeout=5)
        for user in users_with_home_under(entry):
            remove_user(user)
            done.append(f"removed user {user}")
        errors = unmount_all_under(entry)
        for device in loops_backed_by(entry):
            detach_loop(device)
            done.append(f"detached {device}")
        if not errors:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry}")
    for user in pwd.getpwall():
        m = re.fullmatch(r"bwt(\d+)x[0-9a-f]{4}", user.pw_name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            remove_user(user.pw_name)
            done.append(f"removed user {user.pw_name}")
    if done:
        print(f"[harness] cleaned leftovers of killed runs: {done}", file=sys.stderr)
    return done


# --- throwaway users -------------------------------------------------------------------------------------------


def users_with_home_under(path: Path) -> list[str]:
    root = os.fspath(path).rstrip("/") + "/"
    return [p.pw_name for p in pwd.getpwall() if (p.pw_dir.rstrip("/") + "/").startswith(root)]


def remove_user(name: str) -> str | None:
    """Kill the user's processes (by pid, found by uid), then ``userdel -r -f``. Returns an error or None."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
    if uid == 0:
        return f"refusing to remove uid 0 ({name})"
    kill_pids(pids_of_uid(uid), timeout=5)
    proc = run(["userdel", "--remove", "--force", name], check=False)
    # 12 = could not remove home (already gone with the workdir): the account itself is deleted.
    if proc.returncode not in (0, 12):
        return f"userdel {name}: exit {proc.returncode}: {proc.stderr.strip()}"
    return None
