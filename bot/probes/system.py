"""System facts: hostname, OS and version, kernel, architecture, CPUs, memory, root or passwordless sudo.

One round trip: a fixed script (no user input in it) prints labelled sections that :func:`parse_system`
reads. ``/etc/os-release`` gives the distribution, which later decides install hints (borg, clients).
"""

from __future__ import annotations

import shlex

from bot.probes.base import Model, ProbeContext, ProbeError

SCRIPT = r"""
echo "@hostname"; hostname 2>/dev/null || uname -n
echo "@uname"; uname -srm
echo "@os-release"; cat /etc/os-release 2>/dev/null
echo "@nproc"; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
echo "@meminfo"; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null
echo "@uid"; id -u
echo "@user"; id -un
echo "@sudo"; if [ "$(id -u)" = 0 ]; then echo root; elif command -v sudo >/dev/null 2>&1; then
  if sudo -n true 2>/dev/null; then echo passwordless; else echo needs-password; fi; else echo absent; fi
echo "@end"
"""
ARGV = ("sh", "-c", SCRIPT)


class SystemInfo(Model):
    hostname: str
    os_id: str  # "debian", "ubuntu", "rhel", "alpine", … ("" when unknown)
    os_like: tuple[str, ...]
    os_name: str  # PRETTY_NAME
    os_version: str
    kernel: str
    arch: str
    cpus: int | None
    memory_bytes: int | None
    memory_available_bytes: int | None
    user: str
    is_root: bool
    sudo: str  # "root", "passwordless", "needs-password", "absent"

    @property
    def privileged(self) -> bool:
        return self.is_root or self.sudo == "passwordless"

    @property
    def privilege_note(self) -> str:
        if self.privileged:
            return ""
        if self.sudo == "needs-password":
            return (
                f"{self.user} is not root and sudo asks for a password, so the bot cannot read databases' "
                f"system files, list snapshots or back up other users' files. Allow passwordless sudo "
                f"for {self.user}, or connect as root."
            )
        return (
            f"{self.user} is not root and sudo is not installed, so system-wide probes and backups are not "
            "possible. Connect as root, or install sudo and allow it without a password for this user."
        )


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@") and " " not in line:
            current = sections.setdefault(line[1:], [])
        elif current is not None:
            current.append(line)
    return sections


def _os_release(lines: list[str]) -> dict[str, str]:
    values = {}
    for line in lines:
        key, sep, raw = line.partition("=")
        if sep and key.isidentifier():
            try:
                parts = shlex.split(raw)
            except ValueError:
                parts = [raw.strip("\"'")]
            values[key] = parts[0] if parts else ""
    return values


def _kb(lines: list[str], name: str) -> int | None:
    for line in lines:
        if line.startswith(name + ":"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def parse_system(text: str) -> SystemInfo:
    """Parse the output of :data:`SCRIPT`; a truncated or foreign output raises ProbeError."""
    sec = _sections(text)
    if "end" not in sec or "uid" not in sec or not sec["uid"] or not sec["uid"][0].strip().isdigit():
        raise ProbeError("The system probe printed something unexpected; the server's shell may not be POSIX sh.")
    uname = (sec.get("uname") or [""])[0].split()
    release = _os_release(sec.get("os-release", []))
    cpus = (sec.get("nproc") or [""])[0].strip()
    uid = int(sec["uid"][0].strip())
    return SystemInfo(
        hostname=(sec.get("hostname") or [""])[0].strip(),
        os_id=release.get("ID", "").lower(),
        os_like=tuple(release.get("ID_LIKE", "").lower().split()),
        os_name=release.get("PRETTY_NAME", release.get("NAME", uname[0] if uname else "")),
        os_version=release.get("VERSION_ID", ""),
        kernel=uname[1] if len(uname) > 1 else "",
        arch=uname[2] if len(uname) > 2 else "",
        cpus=int(cpus) if cpus.isdigit() else None,
        memory_bytes=_kb(sec.get("meminfo", []), "MemTotal"),
        memory_available_bytes=_kb(sec.get("meminfo", []), "MemAvailable"),
        user=(sec.get("user") or [""])[0].strip(),
        is_root=uid == 0,
        sudo=(sec.get("sudo") or ["absent"])[0].strip() or "absent",
    )


async def probe(ctx: ProbeContext) -> SystemInfo:
    result = await ctx.run(ARGV, what="The system probe")
    return parse_system(result.out)


def context_for(ctx: ProbeContext, info: SystemInfo) -> ProbeContext:
    """The context other probes use once we know whether to go through sudo."""
    return ProbeContext(
        transport=ctx.transport,
        sudo=not info.is_root and info.sudo == "passwordless",
        privileged=info.privileged,
        env=ctx.env,
    )
