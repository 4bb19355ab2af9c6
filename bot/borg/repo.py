"""A repository as borg sees it: where it is, how to reach it, and the passphrase (held in memory only)."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

_ARCHIVE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
STATE_ROOT = ".config/backup-bot/borg"  # under the home of the login that runs borg
# $1 = the state key; the rest = the command. Creates ~/<STATE_ROOT>/<key> owner-only (umask 077 in a subshell, so
# borg itself keeps the login's umask), points borg's security and cache dirs there, and execs the command.
_STATE = (
    'd="${HOME:?the login has no HOME directory}/' + STATE_ROOT + '/$1"; shift; '
    '[ -d "$d" ] || (umask 077 && mkdir -p -- "$d") || { printf "%s\\n" "cannot create $d" >&2; exit 2; }; '
    'BORG_SECURITY_DIR="$d/security" BORG_CACHE_DIR="$d/cache"; export BORG_SECURITY_DIR BORG_CACHE_DIR; '
    'exec "$@"'
)


class InvalidName(ValueError):
    """An archive or repository name that the bot will not hand to borg."""


def archive_name(name: str) -> str:
    """Archive names the bot creates: letters, digits and ``._@+-`` (no spaces, no ``::`` or ``/``)."""
    if not _ARCHIVE.match(name):
        raise InvalidName(f"{name!r} is not a valid archive name: use letters, digits and . _ @ + - only.")
    return name


@dataclass(frozen=True)
class Repo:
    """``url`` is a local path or ``ssh://user@host:port/path``; ``rsh`` the BORG_RSH for ssh URLs.

    ``passphrase`` is passed to borg through the transport's ``secret_env`` (stdin-fed, never argv) and is
    excluded from ``repr``.

    borg's per-client state: borg remembers, per repository id, where it last saw the repository, its key type
    and manifest time (the *security* dir) and a chunk index (the *cache*), and refuses (exit 62) when the same
    repository shows up under another location, or when another client updated that state behind its back. One
    login on one host can be two clients of one repository — the bot's pool-side access by path and a source on
    the same host pushing over ``ssh://`` — so the state must not be the login's default. :meth:`command` gives
    every borg process the state dir of *this* client and repository: ``~/.config/backup-bot/borg/<key>`` on the
    host that runs it (``<key>`` from the URL, see :func:`state_key`), created owner-only. ``base_dir`` (tests)
    sets BORG_BASE_DIR instead and leaves the state where the caller put it.

    ``unencrypted`` says the bot expects an unencrypted (``none`` / ``authenticated``) repository: see
    :meth:`env`.
    """

    url: str
    passphrase: str | None = field(default=None, repr=False)
    rsh: str | None = None
    base_dir: str | None = None
    extra_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # e.g. a dump's password
    unencrypted: bool = False

    def with_secrets(self, secrets: Mapping[str, str]) -> Repo:
        """This repo with more variables for borg's secret environment (inherited by a dump command)."""
        return replace(self, extra_secrets=self.extra_secrets + tuple(secrets.items())) if secrets else self

    def archive(self, name: str) -> str:
        return f"{self.url}::{archive_name(name)}"

    def env(self) -> dict[str, str]:
        """borg's environment (no secrets). ``BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK`` only for a repository the
        bot's own records say is unencrypted: borg asks it on a client's *first* access to such a repository, and
        each client of it (the pool side, every source) has its own state, so a correct setup meets the question
        once per client. Once known, borg's key-type check (exit 61) still refuses an encrypted repository swapped
        for an unencrypted one; a repository recorded as encrypted never gets the variable.
        BORG_RELOCATED_REPO_ACCESS_IS_OK is never set: with one state dir per client and URL, a location change
        means the repository really moved."""
        values = {"BORG_EXIT_CODES": "modern"}
        if self.rsh:
            values["BORG_RSH"] = self.rsh
        if self.base_dir:
            values["BORG_BASE_DIR"] = self.base_dir
        if self.unencrypted:
            values["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        return values

    def state_key(self) -> str:
        """See :func:`state_key`."""
        return state_key(self.url)

    def command(self, argv: Sequence[str]) -> tuple[str, ...]:
        """``argv`` (borg, or a pipeline running borg) run with this client's own borg state (see the class
        docstring); unchanged when ``base_dir`` is set. The state dir is made from ``$HOME`` where the command runs,
        so the same :class:`Repo` keeps one state per host and login without knowing the home directory."""
        if self.base_dir:
            return tuple(argv)
        return ("sh", "-c", _STATE, "sh", self.state_key(), *argv)

    def secret_env(self) -> dict[str, str]:
        values = dict(self.extra_secrets)
        if self.passphrase is not None:
            values["BORG_PASSPHRASE"] = self.passphrase
        return values


def state_key(url: str) -> str:
    """Given a repository URL, return the name of its client state dir: the repository's last path element
    (readable in ``ls``) and a digest of the whole URL (a path seen by the pool login and the same path pushed to
    over ``ssh://`` are two clients; two repositories never share a key)."""
    canonical = url.rstrip("/") or url
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", canonical.rsplit("/", 1)[-1]).strip("-.")[:60] or "repo"
    return f"{tail}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:16]}"


def ssh_url(user: str, host: str, port: int, path: str) -> str:
    """borg's ssh URL; IPv6 hosts in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"ssh://{user}@{shown}:{port}{path if path.startswith('/') else '/' + path}"


def rsh_command(identity_file: str, known_hosts_file: str, *, connect_timeout: int = 30) -> str:
    """BORG_RSH for a source server pushing to a pool: its own key, the pool's pinned host key, no prompts."""
    return shlex.join(
        [
            "ssh",
            "-i", identity_file,
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_file}",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=30",
            "-o", "ServerAliveCountMax=4",
        ]
    )  # fmt: skip
