"""Real OpenSSH servers on loopback: several distinct "servers" on one machine.

Why: the bot's whole job is SSH (pinned host keys, forced-command keys for ``borg serve``, password-once key
install, dropped or re-keyed hosts). A fake server would answer what we think OpenSSH answers; these are the real
``/usr/sbin/sshd`` (Debian's openssh-server), one process per simulated host, each on its own loopback address
(127.0.0.2, 127.0.0.3 …; all of 127.0.0.0/8 is loopback) and a free port, with its own ed25519 host key, its own
``authorized_keys`` file, its own ``hostname`` (a UTS namespace: ``unshare --uts``) and its own borg state.

How borg gets on the PATH of an ssh session: each host's sshd_config has ``SetEnv PATH=<workdir>/bin:…`` where
``<workdir>/bin`` holds only a ``borg`` symlink to the venv's borg. Chosen over a symlink in /usr/local/bin
because it changes nothing outside the host's temp dir (nothing is left behind by a killed run, concurrent test
sessions cannot fight over one global link, and ``with_borg=False`` simulates a server without borg). sshd applies
SetEnv after its own defaults, also for forced commands (``command="borg serve …"``); root's ~/.bashrc on this
machine kind only prepends pyenv/cargo dirs, which hold no ``borg``. ``SetEnv BORG_BASE_DIR=<workdir>/borg-base``
(root logins) gives each simulated host its own borg security/cache dirs, see TESTING.md.

A throwaway non-root login (``nonroot=True``) is created with ``useradd`` (home in the host's temp dir, a random
password, no sudo) and removed in teardown. Note: the venv's borg is reachable for it only if the venv's
interpreter is readable by other users (on this machine kind the interpreter lives under /root, mode 700):
``SshHost.borg_on_path`` says whether it works.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.common import (
    CommandError,
    find_borg,
    free_port,
    is_root,
    kill_pids,
    make_workdir,
    pids_of_uid,
    pids_with_env,
    reap_stale,
    remove_user,
    require_tool,
    run,
    stop_process_tree,
    tail,
    users_with_home_under,
    wait_for_banner,
)

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 15.0

_address_counter = itertools.count(1)


def next_loopback_address() -> str:
    """127.0.0.2, 127.0.0.3 … 127.0.0.254, 127.0.1.1 …: a distinct address per simulated host in this process."""
    b, c = divmod(next(_address_counter), 254)
    return f"127.0.{b}.{c + 1}"


_uts_ok: bool | None = None


def _uts_namespaces_work() -> bool:
    global _uts_ok
    if _uts_ok is None:
        _uts_ok = (
            shutil.which("unshare") is not None
            and run(["unshare", "--uts", "hostname", "bw-probe"], check=False).returncode == 0
        )
    return _uts_ok


def generate_ed25519(path: Path, comment: str) -> str:
    """``ssh-keygen -t ed25519`` without passphrase at ``path`` (+ ``.pub``); returns the public key line."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return path.with_name(path.name + ".pub").read_text().strip()


def fingerprint(public_key_path: Path) -> str:
    """The ``SHA256:…`` field exactly as ``ssh-keygen -lf`` prints it."""
    return run(["ssh-keygen", "-lf", public_key_path]).stdout.split()[1]


def authorized_keys_line(public_key: str, *, command: str | None = None, restrict: bool = False) -> str:
    """An authorized_keys line, e.g. ``command="borg serve --restrict-to-path /r --append-only",restrict KEY``."""
    options: list[str] = []
    if command is not None:
        options.append('command="' + command.replace("\\", "\\\\").replace('"', '\\"') + '"')
    if restrict:
        options.append("restrict")
    return (",".join(options) + " " if options else "") + public_key.strip()


@dataclass(eq=False)
class SshHost:
    """One running sshd = one simulated server. Fields are updated in place by :meth:`restart`."""

    name: str
    host: str  # loopback address it listens on
    port: int
    user: str  # login user: "root" or the throwaway user's name
    client_key_path: Path  # private key (no passphrase) authorised for ``user`` unless authorize_client=False
    client_public_key: str  # "ssh-ed25519 AAAA… comment"
    host_key_path: Path
    host_public_key: str  # "ssh-ed25519 AAAA…" (OpenSSH line, no comment)
    host_key_fingerprint: str  # "SHA256:…" as `ssh-keygen -lf` prints it
    authorized_keys_path: Path  # the fixture-owned authorized_keys file read by this sshd
    workdir: Path
    password: str | None  # the throwaway user's password; None for root (root's password is never touched)
    password_auth: bool  # PasswordAuthentication yes/no in this sshd
    home: Path  # login user's home; for root a private one set with SetEnv HOME (its ~/.ssh/authorized_keys is read)
    hostname: str  # what `hostname` prints in sessions on this host (own UTS namespace if supported)
    known_hosts_path: Path  # an OpenSSH known_hosts file pinning this host's current key
    borg_base_dir: Path | None  # BORG_BASE_DIR set for root sessions on this host (None for non-root)
    borg_on_path: bool  # `borg` runs in an ssh session on this host
    log_path: Path
    _config_path: Path = field(repr=False)
    _nonroot: bool = field(repr=False, default=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # --- addressing -------------------------------------------------------------------------------------------
    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def borg_url(self, path: str | os.PathLike[str]) -> str:
        """``ssh://user@host:port/abs/path`` (borg 1.x remote repository URL)."""
        return f"ssh://{self.user}@{self.host}:{self.port}{os.fspath(path)}"

    def ssh_options(self, identity: Path | None = None) -> list[str]:
        """OpenSSH client options: this key only, this host key pinned, no prompts, no ~/.ssh/config."""
        return [
            "-F", "/dev/null",
            "-i", os.fspath(identity or self.client_key_path),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10",
        ]  # fmt: skip

    def borg_rsh(self, identity: Path | None = None) -> str:
        """Value for ``BORG_RSH`` (the port comes from the URL)."""
        return shlex.join(["ssh", *self.ssh_options(identity)])

    def ssh_argv(self, command: str, identity: Path | None = None) -> list[str]:
        return ["ssh", *self.ssh_options(identity), "-p", str(self.port), f"{self.user}@{self.host}", command]

    def ssh(
        self, command: str, *, identity: Path | None = None, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on this host through the OpenSSH client (synchronous convenience for tests)."""
        return run(self.ssh_argv(command, identity), input=input, check=check)

    def connect_kwargs(self, identity: Path | None = None) -> dict[str, Any]:
        """Keyword arguments for ``asyncssh.connect`` pinning this host key and using only our client key."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [os.fspath(identity or self.client_key_path)],
            "known_hosts": os.fspath(self.known_hosts_path),
            "agent_path": None,
            "config": [],
        }

    # --- authorized keys ---------------------------------------------------------------------------------------
    def add_authorized_key(self, line: str) -> None:
        """Append one line to this sshd's authorized_keys (takes effect for the next login)."""
        with self.authorized_keys_path.open("a") as fh:
            fh.write(line.strip() + "\n")

    def authorize(self, public_key: str, *, command: str | None = None, restrict: bool = False) -> str:
        line = authorized_keys_line(public_key, command=command, restrict=restrict)
        self.add_authorized_key(line)
        return line

    def log(self) -> str:
        return tail(self.log_path, 20000)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Kill this sshd and every session it spawned (a dropped host: connections are refused)."""
        if self._proc is not None:
            stop_process_tree(self._proc)
            self._proc = None
        # Session processes that left sshd's tree (nohup/setsid) still carry the host's SetEnv marker.
        kill_pids(pids_with_env("BW_TEST_HOST_DIR", os.fspath(self.workdir)), timeout=5)
        if self._nonroot:
            with contextlib.suppress(KeyError):
                kill_pids(pids_of_uid(pwd.getpwnam(self.user).pw_uid), timeout=5)

    def start(self) -> None:
        """Start (again) on the same address and port; waits for the SSH banner."""
        if self.running:
            return
        _write_config(self)
        _launch(self)

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop and start again; ``new_host_key=True`` regenerates the host key first (a re-installed or
        impersonated server: a client pinning the old key must refuse it). Fields are updated in place."""
        self.stop()
        if new_host_key:
            _make_host_key(self)
        self.start()


def _make_host_key(host: SshHost) -> None:
    line = generate_ed25519(host.host_key_path, f"host-{host.name}")
    host.host_public_key = " ".join(line.split()[:2])
    host.host_key_fingerprint = fingerprint(host.host_key_path.with_name(host.host_key_path.name + ".pub"))
    host.known_hosts_path.write_text(host.known_hosts_line + "\n")


def _write_config(host: SshHost) -> None:
    setenv = [
        f"PATH={host.workdir / 'bin'}:{STD_PATH}",
        f"BW_TEST_HOST={host.name}",
        f"BW_TEST_HOST_DIR={host.workdir}",
    ]
    if host.borg_base_dir is not None:
        setenv.append(f"BORG_BASE_DIR={host.borg_base_dir}")
    keys_files = [os.fspath(host.authorized_keys_path)]
    if host._nonroot:
        keys_files.append(".ssh/authorized_keys")  # relative = in the user's home: the password-then-key flow
    else:
        # Root sessions get a private HOME (sshd's SetEnv overrides the passwd entry's): what the bot writes
        # into "~" (authorized_keys of a pool, push keys, .my.cnf, .pgpass) stays in the test's directory and
        # never touches the machine's real /root. sshd still reads that authorized_keys for root.
        setenv.append(f"HOME={host.home}")
        keys_files.append(os.fspath(host.home / ".ssh" / "authorized_keys"))
    lines = [
        f"Port {host.port}",
        f"ListenAddress {host.host}",
        "AddressFamily inet",
        f"HostKey {host.host_key_path}",
        f"PidFile {host.workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {' '.join(keys_files)}",
        f"AllowUsers {host.user}",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if host.password_auth else 'no'}",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel VERBOSE",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "Subsystem sftp internal-sftp",
        "SetEnv " + " ".join(setenv),
    ]
    host._config_path.write_text("\n".join(lines) + "\n")


def _launch(host: SshHost) -> None:
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation dir
    daemon = [SSHD, "-D", "-f", os.fspath(host._config_path), "-E", os.fspath(host.log_path)]
    if _uts_namespaces_work():
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host.hostname, *daemon]
    else:
        argv = daemon
    err_path = host.workdir / "start.err"
    with err_path.open("ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    host._proc = proc
    banner = wait_for_banner(
        host.host, host.port, prefix=b"SSH-2.0-", timeout=START_TIMEOUT, alive=lambda: proc.poll() is None
    )
    if banner is None:
        code = proc.poll()
        stop_process_tree(proc)
        host._proc = None
        raise RuntimeError(
            f"sshd for {host.name} did not come up on {host.host}:{host.port} "
            f"({'exited with ' + str(code) if code is not None else 'no banner within ' + str(START_TIMEOUT) + 's'})\n"
            f"--- sshd log ---\n{tail(host.log_path)}\n--- stderr ---\n{tail(err_path)}\n"
            f"--- sshd_config ---\n{host._config_path.read_text()}"
        )


class SshdFactory:
    """Creates :class:`SshHost` servers; :meth:`close` stops them all and removes users and temp dirs."""

    def __init__(self) -> None:
        self.hosts: list[SshHost] = []
        self._names = itertools.count(1)

    def __call__(
        self,
        name: str | None = None,
        *,
        address: str | None = None,
        nonroot: bool = False,
        password_auth: bool = False,
        client_key: Path | None = None,
        authorize_client: bool = True,
        with_borg: bool = True,
    ) -> SshHost:
        """Start one sshd.

        name: label, also the host's ``hostname`` and ``$BW_TEST_HOST`` in its sessions (default ``bwhostN``).
        address: loopback address (default: the next free one of 127.0.0.2, 127.0.0.3 …).
        nonroot: log in as a throwaway non-root user without sudo instead of root.
        password_auth: allow password logins (needs ``nonroot``; root's password is never set).
        client_key: reuse this private key as the client key (e.g. the bot's identity) instead of a new one.
        authorize_client: put the client key in authorized_keys (False: e.g. only a password works at first).
        with_borg: put borg on the session PATH (False simulates a server without borg).
        """
        if not is_root():
            pytest.skip(f"sshd fixture needs root (euid {os.geteuid()}): it binds as root and switches users")
        require_tool("sshd", "openssh-server", path=SSHD)
        require_tool("ssh", "openssh-client")
        require_tool("ssh-keygen", "openssh-client")
        reap_stale()
        if password_auth and not nonroot:
            raise ValueError("password_auth=True needs nonroot=True: the harness never sets root's password")
        name = name or f"bwhost{next(self._names)}"
        safe = re.sub(r"[^A-Za-z0-9-]", "-", name)[:40] or "host"
        workdir = make_workdir(f"sshd-{safe}")
        workdir.chmod(0o755)  # a non-root login's sshd child reads authorized_keys and bin/ from here
        host: SshHost | None = None
        try:
            host = self._build(name, workdir, address, nonroot, password_auth, client_key, authorize_client, with_borg)
            self.hosts.append(host)
            self._start_with_port_retry(host, fixed_port=False)
        except BaseException:
            if host is not None:
                with contextlib.suppress(ValueError):
                    self.hosts.remove(host)
                errors = _teardown(host)
            else:
                errors = [e for u in users_with_home_under(workdir) if (e := remove_user(u))]
                shutil.rmtree(workdir, ignore_errors=True)
            if errors:
                print(f"[harness] cleanup after failed sshd start: {errors}")
            raise
        return host

    def _build(
        self,
        name: str,
        workdir: Path,
        address: str | None,
        nonroot: bool,
        password_auth: bool,
        client_key: Path | None,
        authorize_client: bool,
        with_borg: bool,
    ) -> SshHost:
        address = address or next_loopback_address()
        user, home, password = "root", workdir / "home", None
        if not nonroot:
            home.mkdir(mode=0o700)
        if nonroot:
            user = f"bwt{os.getpid()}x{secrets.token_hex(2)}"
            home = workdir / "home"
            password = secrets.token_urlsafe(12)
            run(["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/bash", "--user-group",
                 "--comment", "backup wizard test user", user])  # fmt: skip
            run(["chpasswd"], input=f"{user}:{password}\n")  # also unlocks the account (UsePAM no checks it)
        bin_dir = workdir / "bin"
        bin_dir.mkdir()
        borg = find_borg() if with_borg else None
        if borg is not None:
            (bin_dir / "borg").symlink_to(borg)
        if client_key is None:
            client_key = workdir / "client_ed25519"
            client_public = generate_ed25519(client_key, f"bw-test-client@{name}")
        else:
            client_public = Path(os.fspath(client_key) + ".pub").read_text().strip()
        authorized = workdir / "authorized_keys"
        authorized.write_text(client_public + "\n" if authorize_client else "")
        authorized.chmod(0o644)
        borg_base = None
        if not nonroot:
            borg_base = workdir / "borg-base"
            borg_base.mkdir()
        host = SshHost(
            name=name,
            host=address,
            port=0,
            user=user,
            client_key_path=client_key,
            client_public_key=client_public,
            host_key_path=workdir / "ssh_host_ed25519_key",
            host_public_key="",
            host_key_fingerprint="",
            authorized_keys_path=authorized,
            workdir=workdir,
            password=password,
            password_auth=password_auth,
            home=home,
            hostname=re.sub(r"[^A-Za-z0-9-]", "-", name)[:63] if _uts_namespaces_work() else socket.gethostname(),
            known_hosts_path=workdir / "known_hosts",
            borg_base_dir=borg_base,
            borg_on_path=False,
            log_path=workdir / "sshd.log",
            _config_path=workdir / "sshd_config",
            _nonroot=nonroot,
        )
        host.port = free_port(address)
        _make_host_key(host)
        if borg is not None:
            if nonroot:
                check = ["runuser", "-u", user, "--", os.fspath(bin_dir / "borg"), "--version"]
                host.borg_on_path = run(check, check=False, timeout=60).returncode == 0
            else:
                host.borg_on_path = True
        return host

    def _start_with_port_retry(self, host: SshHost, *, fixed_port: bool) -> None:
        for attempt in range(3):
            try:
                host.start()
                return
            except RuntimeError as exc:
                if fixed_port or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                host.port = free_port(host.host)
                host.known_hosts_path.write_text(host.known_hosts_line + "\n")

    def close(self) -> None:
        errors: list[str] = []
        while self.hosts:
            errors += _teardown(self.hosts.pop())
        if errors:
            raise RuntimeError("sshd teardown: " + "; ".join(errors))


def _teardown(host: SshHost) -> list[str]:
    errors: list[str] = []
    try:
        host.stop()
    except Exception as exc:  # keep going: the user and the dir must still go
        errors.append(f"stop {host.name}: {exc}")
    if host._nonroot:
        err = remove_user(host.user)
        if err:
            errors.append(err)
    shutil.rmtree(host.workdir, ignore_errors=True)
    return errors


@pytest.fixture
def make_sshd() -> Iterator[SshdFactory]:
    """Factory for sshd servers that live for one test (so a test may stop, re-key or break them freely).

    ``host = make_sshd("pool", nonroot=False, password_auth=False)`` → :class:`SshHost`."""
    factory = SshdFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def make_sshd_session() -> Iterator[SshdFactory]:
    """Like :func:`make_sshd` but the servers live for the whole session (for read-only uses shared by many
    tests; do not stop or re-key them)."""
    factory = SshdFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def sshd_host(make_sshd_session: SshdFactory) -> SshHost:
    """One root-login sshd for the session (read-only use: tests must not stop it or change its keys)."""
    return make_sshd_session("sshd-host")


__all__ = [
    "CommandError",
    "SshHost",
    "SshdFactory",
    "authorized_keys_line",
    "fingerprint",
    "generate_ed25519",
    "next_loopback_address",
]
