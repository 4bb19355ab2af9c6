"""Small helpers shared by the CLI subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bot.access import Actor, Refused
from bot.config import ConfigError, Settings, load_settings
from bot.transport import SSHPool
from storage import db
from storage.crypto import install_keyring
from storage.tenancy import Tenant


def load_for_command(env_path: Path, **overrides: Any) -> Settings:
    """Settings for a subcommand: the env file is optional, but a directory in its place is a mistake."""
    if env_path.exists() and not env_path.is_file():
        raise ConfigError(f"{env_path} is not a file. Point --env-file at the settings file (default .env).")
    if env_path.exists():
        try:
            env_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read the settings file {env_path}: {exc.strerror or type(exc).__name__}. Run "
                              "as the user that owns it (it is private: mode 0600).") from None  # fmt: skip
    return load_settings(env_path, **overrides)


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (mode 0700 when new) and prove it is writable, or say which directory and why."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} ({what}) is a file, not a directory. Move the file away or choose another "
                          "directory.")  # fmt: skip
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        hint = "choose another directory or fix its permissions"
        if os.geteuid() != 0:
            hint += f" (you are running as uid {os.geteuid()})"
        raise ConfigError(f"Cannot write to {path} ({what}): {reason}. Please {hint}.") from None


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): how a long-running command learns to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@dataclass
class Signals:
    """SIGTERM and SIGINT for ``run`` and ``worker``, in every state of the process.

    Before the command serves (connecting to the database or to Slack, waiting for a lease) there is nothing to
    finish, so the first signal stops it at once (``force``). Once it serves (``serving`` set by the command), the
    first signal is a clean stop the command performs itself (``stop``: no new work, running backups get their
    grace), and a second one stops it at once. :func:`supervise` turns ``force`` into a cancellation.
    """

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    serving: bool = False
    notice: str = "Stopping cleanly (running backups get their grace period); SIGTERM or Ctrl-C again stops at once."

    @classmethod
    def install(cls) -> Signals:
        """Handlers for SIGTERM and SIGINT on the running loop (a Ctrl-C then never raises KeyboardInterrupt)."""
        signals = cls()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.received)
        return signals

    def received(self) -> None:
        if self.stop.is_set() or not self.serving:
            self.force.set()
        elif self.notice:
            print(self.notice, file=sys.stderr, flush=True)
        self.stop.set()


async def supervise(work: Coroutine[Any, Any, int], signals: Signals, *, bound: float = 10.0) -> int:
    """Given a command's coroutine, return its exit status, or 0 once a signal forced it to stop.

    A forced stop cancels the coroutine (its ``finally`` blocks close connections) and waits ``bound`` seconds for
    that; a coroutine that does not finish by then is abandoned and the process exits, so a signal always ends it.
    """
    task = asyncio.ensure_future(work)
    forced = asyncio.ensure_future(signals.force.wait())
    try:
        await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forced.cancel()
    if task.done():
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=bound)
    if not done:
        print(f"Did not finish stopping within {bound:.0f} s; exiting anyway.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    print("Stopped.", file=sys.stderr, flush=True)
    return 0


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def description(doc: str | None) -> str:
    """Given a command module's docstring, the plain text ``--help`` shows above the options (reST markup removed:
    ``x`` becomes x, :func:`~a.b` becomes b), so the help and the module's documentation never drift apart."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), doc or "")
    return text.replace("``", "`").strip() + "\n"


def command(sub: argparse._SubParsersAction, name: str, doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with the module's docstring, line breaks kept."""
    return sub.add_parser(name, description=description(doc), formatter_class=argparse.RawDescriptionHelpFormatter,
                          **kwargs)  # fmt: skip


@contextlib.asynccontextmanager
async def bot_ssh_pool(settings: Settings) -> AsyncIterator[SSHPool]:
    """Given the settings of a connected command, yield an SSH pool with the bot's own key and the configured limits
    (closed after), or stop with one sentence when ``init`` has not made the key yet."""
    from bot.cli import UsageError
    from bot.identity import load_private_key

    install_keyring(settings.keyring())
    try:
        key = await load_private_key()
    except Exception:
        raise UsageError("The bot has no SSH identity yet: run `backup-bot init` first.") from None
    pool = SSHPool([key], **settings.ssh_pool_options())
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def operator_session(args: argparse.Namespace) -> AsyncIterator[tuple[Actor, SimpleNamespace]]:
    """Given a command's arguments (``--env-file``, ``--team``), yield the shell operator acting for that workspace
    and the services a service-layer call needs (the bot's SSH pool, borg), inside a connected database; a refusal
    becomes the command's one sentence."""
    from bot.cli import UsageError

    actor = Actor.operator(Tenant(args.team).team_id)
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url), bot_ssh_pool(settings) as pool:
        try:
            yield actor, SimpleNamespace(pool=pool, borg="borg")
        except Refused as exc:
            raise UsageError(exc.sentence) from None
