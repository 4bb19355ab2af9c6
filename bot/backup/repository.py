"""Setting a repository up with zero manual borg commands, and undoing it cleanly when a step fails.

Steps, each with its undo registered before the next step starts:
1. the pool side (the bot's own, unrestricted access): ``borg init`` with a generated passphrase — or, for
   "use existing", prove the passphrase opens it; then ``borg key export`` so a restore never depends on the
   pool alone;
2. a key pair generated for the *source* server; its public half goes into the pool user's
   authorized_keys as ``command="borg serve --restrict-to-path <repo> --append-only --storage-quota <q>",restrict``:
   a compromised source can add archives (at most up to the quota, sized from the pool's settings by
   :func:`push_quota`) and hide some, but only a trusted client's compaction frees anything, and the bot compacts
   only after comparing the repository with its record (:mod:`bot.backup.integrity`);
3. the private half and the pool's pinned host key are written on the source server (mode 0600 in a
   directory of the bot's), which then pushes with ``BORG_RSH`` (see :func:`bot.borg.repo.rsh_command`).

If any step fails, the completed ones are undone in reverse order (the half-made repository is removed only
when this call created it) and the error says what happened and what, if anything, is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.borg import init as borg_init
from bot.borg import key as borg_key
from bot.borg import list as borg_list
from bot.borg.init import is_unencrypted
from bot.borg.repo import Repo, rsh_command, ssh_url
from bot.borg.runner import BorgError
from bot.transport.base import Transport
from bot.transport.keys import generate_key_pair

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,99}$")
KEY_DIR = ".config/backup-bot"  # under the source login's home
_MARK = "backup-bot:"  # authorized_keys comment prefix: the bot only ever removes its own lines

# An awk filter true for lines ENDING with the marker ($1) — exact, so /srv/r never matches /srv/r2.
_ENDS = "awk -v m=\"$1\" 'length($0) >= length(m) && substr($0, length($0) - length(m) + 1) == m'"
# $1 = marker, $2 = the authorized_keys line (ending with the marker). Appends unless already there.
_ADD_KEY = (
    'umask 077 && mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && touch "$f" && '
    f'{{ [ -n "$({_ENDS} "$f")" ] || printf "%s\\n" "$2" >> "$f"; }}'
)
# $1 = marker. Rewrites authorized_keys without the line(s) ending with it (same file: modes are kept).
_REMOVE_KEY = (
    'f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; '
    'awk -v m="$1" \'!(length($0) >= length(m) && substr($0, length($0) - length(m) + 1) == m)\' "$f" '
    '> "$f.bb-tmp" && cat "$f.bb-tmp" > "$f"; rm -f "$f.bb-tmp"'
)
# $1 = directory under $HOME, $2 = file name; stdin = the content. Owner-only.
_WRITE = 'umask 077 && mkdir -p "$HOME/$1" && cat > "$HOME/$1/$2" && chmod 600 "$HOME/$1/$2"'


MIN_QUOTA = 10 * 1024 * 1024  # borg refuses a storage quota below 10 MiB
CAPACITY_SHARE = 0.9  # of a pool's disk one push key may fill when the pool has no quota of its own


def push_quota(quota_bytes: int | None, capacity_bytes: int | None) -> int | None:
    """Given a pool's quota and its disk's capacity, return the ``--storage-quota`` of a source's push key: the
    pool's quota when it has one, else 90 % of its disk (so a compromised source cannot fill the pool's disk and
    stop every other repository on it), at least borg's minimum; None when the pool knows neither."""
    if quota_bytes:
        return max(int(quota_bytes), MIN_QUOTA)
    if capacity_bytes:
        return max(int(capacity_bytes * CAPACITY_SHARE), MIN_QUOTA)
    return None


def forced_command(path: str, storage_quota: int | None) -> str:
    """The pool-side forced command of a source's push key: ``borg serve`` restricted to the repository,
    append-only, with the storage quota when there is one."""
    quota = f" --storage-quota {int(storage_quota)}" if storage_quota else ""
    return f"borg serve --restrict-to-path {shlex.quote(path)} --append-only{quota}"


class RepositorySetupError(Exception):
    """A setup step failed; ``message`` says which, and what was cleaned up or is left behind."""


@dataclass(frozen=True)
class PoolAccess:
    """How the bot reaches the pool (its own access) and how a source server reaches it (push)."""

    transport: Transport  # the bot → pool (unrestricted; runs borg init/prune/compact/check there)
    host: str  # as the source server must address it
    port: int
    user: str
    host_key: str  # the pool's pinned host key line, written into the source's known_hosts
    storage_quota: int | None = None  # bytes the push key may let the repository grow to (None: no quota)


@dataclass(frozen=True)
class RepoSpec:
    name: str  # unique per pool; also the directory name under base_path
    base_path: str
    encryption: str = "repokey-blake2"
    existing_passphrase: str | None = field(default=None, repr=False)  # "use existing" when set

    @property
    def path(self) -> str:
        return f"{self.base_path.rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class RepositorySetup:
    path: str
    passphrase: str = field(repr=False)
    key_export: str | None = field(repr=False)
    client_key_private: str = field(repr=False)
    client_key_public: str
    key_file: str  # on the source server, relative to the login's home
    known_hosts_file: str
    created: bool  # False when an existing repository was adopted

    def source_repo(self, pool: PoolAccess, home: str, *, base_dir: str | None = None,
                    unencrypted: bool = False) -> Repo:  # fmt: skip
        """The Repo a source server pushes to (``home``: the source login's home directory)."""
        return Repo(
            url=ssh_url(pool.user, pool.host, pool.port, self.path),
            passphrase=self.passphrase,
            rsh=rsh_command(f"{home}/{self.key_file}", f"{home}/{self.known_hosts_file}"),
            base_dir=base_dir,
            unencrypted=unencrypted,
        )


def repository_name(server: str, backup_type: str, name: str) -> str:
    """The naming convention ``{server}-{type}-{name}``, lowercased, with anything unsafe turned into ``-``."""
    raw = "-".join(part for part in (server, backup_type, name) if part)
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.")
    if not NAME.match(cleaned):
        raise RepositorySetupError(
            f"{raw!r} does not give a usable repository name: use letters, digits, '.', '_' or '-' (2–100 characters)."
        )
    return cleaned


class _Undo:
    """Undo actions registered as steps complete; run in reverse order on failure."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def add(self, what: str, action: Callable[[], Awaitable[object]]) -> None:
        self.actions.append((what, action))

    async def run(self) -> list[str]:
        left: list[str] = []
        for what, action in reversed(self.actions):
            try:
                await action()
            except Exception as exc:  # keep undoing the rest; report what stayed
                left.append(f"{what} ({type(exc).__name__})")
        return left


async def _prepare_pool(pool: PoolAccess, spec: RepoSpec, undo: _Undo) -> tuple[str, str | None, bool]:
    """Init (or verify) the repository; returns passphrase, key export, whether it was created here."""
    if spec.existing_passphrase is not None:
        repo = Repo(url=spec.path, passphrase=spec.existing_passphrase, unencrypted=is_unencrypted(spec.encryption))
        await borg_list.archives(pool.transport, repo)  # proves the path is a repository and the passphrase opens it
        return spec.existing_passphrase, await _key_export(pool, repo), False
    exists = await pool.transport.run(["test", "-e", spec.path])
    if exists.ok:
        raise RepositorySetupError(
            f"{spec.path} already exists on the pool: choose another repository name, or use the existing repository "
            "with its passphrase."
        )
    passphrase = secrets.token_urlsafe(32)
    repo = Repo(url=spec.path, passphrase=passphrase, unencrypted=is_unencrypted(spec.encryption))
    undo.add(
        f"the repository directory {spec.path} on the pool", lambda: pool.transport.run(["rm", "-rf", "--", spec.path])
    )
    await borg_init.run(pool.transport, repo, spec.encryption)
    return passphrase, await _key_export(pool, repo), True


async def _key_export(pool: PoolAccess, repo: Repo) -> str | None:
    try:
        return await borg_key.export(pool.transport, repo)
    except (BorgError, ValueError):
        return None  # unencrypted or authenticated-only repositories have no key to export


async def _install_pool_key(pool: PoolAccess, spec: RepoSpec, public: str, undo: _Undo) -> None:
    marker = f"{_MARK}{spec.path}"
    forced = forced_command(spec.path, pool.storage_quota)
    line = f'command="{forced}",restrict {public} {marker}'
    undo.add("the source key line in the pool's authorized_keys",
             lambda: pool.transport.run(["sh", "-c", _REMOVE_KEY, "sh", marker]))  # fmt: skip
    result = await pool.transport.run(["sh", "-c", _ADD_KEY, "sh", marker, line])
    if not result.ok:
        raise RepositorySetupError(f"Installing the source key on the pool failed: {result.describe_failure()}.")


async def _install_source_key(
    source: Transport, pool: PoolAccess, spec: RepoSpec, private: str, undo: _Undo
) -> tuple[str, str]:
    directory = f"{KEY_DIR}/{spec.name}"
    key_file, known_file = f"{directory}/id_ed25519", f"{directory}/known_hosts"
    undo.add(
        "the push key on the source server", lambda: source.run(["sh", "-c", 'rm -rf -- "$HOME/$1"', "sh", directory])
    )
    known = f"[{pool.host}]:{pool.port} {pool.host_key}" if pool.port != 22 else f"{pool.host} {pool.host_key}"
    result = await source.run(["sh", "-c", _WRITE, "sh", directory, "id_ed25519"], stdin=private.encode())
    if result.ok:
        result = await source.run(["sh", "-c", _WRITE, "sh", directory, "known_hosts"], stdin=f"{known}\n".encode())
    if not result.ok:
        raise RepositorySetupError(f"Writing the push key on the source server failed: {result.describe_failure()}.")
    return key_file, known_file


async def set_up(source: Transport, pool: PoolAccess, spec: RepoSpec) -> RepositorySetup:
    """Create (or adopt) the repository and wire the source's append-only access; all or nothing."""
    if not NAME.match(spec.name):
        raise RepositorySetupError(f"{spec.name!r} is not a valid repository name.")
    if not spec.base_path.startswith("/") or any(c in spec.base_path for c in '"\n\r\x00\\'):
        raise RepositorySetupError(
            "The pool's base path must be absolute and free of quotes, backslashes and newlines."
        )
    undo = _Undo()
    try:
        passphrase, key_export, created = await _prepare_pool(pool, spec, undo)
        client = generate_key_pair(f"backup-bot push {spec.name}")
        public, private = client.public, client.private
        await _install_pool_key(pool, spec, public.split(" ", 2)[0] + " " + public.split(" ", 2)[1], undo)
        key_file, known_file = await _install_source_key(source, pool, spec, private, undo)
    except asyncio.CancelledError:
        await undo.run()
        raise
    except Exception as exc:
        left = await undo.run()
        note = f" Could not remove: {', '.join(left)}; remove by hand." if left else " Nothing was left behind."
        hint = f" {exc.hint}" if isinstance(exc, BorgError) else ""
        raise RepositorySetupError(f"Setting up repository {spec.name} failed: {exc}{hint}{note}") from exc
    return RepositorySetup(
        path=spec.path, passphrase=passphrase, key_export=key_export, client_key_private=private,
        client_key_public=public, key_file=key_file, known_hosts_file=known_file, created=created,
    )  # fmt: skip


async def tear_down_access(source: Transport, pool: PoolAccess, spec: RepoSpec) -> bool:
    """Remove the source's push key from both sides (the repository itself is kept); return whether the pool's
    ``authorized_keys`` line was removed (the source's copy is best effort: without the line it opens nothing)."""
    with contextlib.suppress(Exception):
        await source.run(["sh", "-c", 'rm -rf -- "$HOME/$1"', "sh", f"{KEY_DIR}/{spec.name}"])
    removed = await pool.transport.run(["sh", "-c", _REMOVE_KEY, "sh", f"{_MARK}{spec.path}"])
    return removed.ok  # False: the pool's line may still be there (the push key would keep working)
