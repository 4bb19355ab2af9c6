"""Reading and rewriting the ``.env`` file without losing what the operator wrote in it.

Updates keep every other line (comments included) in place and are written atomically with mode 0600:
a crash never leaves a half-written file holding the only copy of the secret keys.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dotenv import dotenv_values

_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def read_env(path: Path) -> dict[str, str]:
    """The file's assignments (empty when the file does not exist)."""
    if not path.exists():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def render_env(existing: str, updates: dict[str, str]) -> str:
    """``existing`` text with each key in ``updates`` set (replaced where present, appended otherwise)."""
    remaining = dict(updates)
    lines = []
    for line in existing.splitlines():
        match = _ASSIGN.match(line)
        if match and match.group(1) in remaining:
            key = match.group(1)
            lines.append(f"{key}={remaining.pop(key)}")
        else:
            lines.append(line)
    lines.extend(f"{k}={v}" for k, v in remaining.items())
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and a rename."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_env(path: Path, updates: dict[str, str]) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text_atomic(path, render_env(existing, updates))
