"""Small helpers shared by the CLI subcommands."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from bot.config import ConfigError, Settings, load_settings


def load_for_command(env_path: Path, **overrides: Any) -> Settings:
    """Settings for a subcommand: the env file is optional, but a directory in its place is a mistake."""
    if env_path.exists() and not env_path.is_file():
        raise ConfigError(f"{env_path} is not a file. Point --env-file at the settings file (default .env).")
    return load_settings(env_path, **overrides)


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (mode 0700 when new) and prove it is writable, or say which directory and why."""
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
    """An event set by SIGTERM or SIGINT (Ctrl-C): how `run` and `worker` learn to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
