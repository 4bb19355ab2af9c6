"""Borg on a server: present? which version? one the bot supports? and, if not, how to get 1.4 there.

The bot drives borg 1.4.x (its command line and JSON output); 1.2/1.1 are still found on stable distributions
and work differently in places, and borg 2 (beta) uses a repository format that borg 1.x cannot read. So the
probe answers with a ``supported`` flag and a sentence, never with a bare version string.

``borg --version`` prints ``<prog> <version>`` where ``<prog>`` is the name it was started under (``borg``,
``borg-linux64`` for the standalone binary, ``borg2`` for Debian's borgbackup2 package). The install hint is
chosen from the system probe's ``os_id`` / ``os_like``, and says when that distribution's package is older than
1.4 (e.g. Debian 12 ships 1.2.4), in which case a pip install in a virtualenv is the way to 1.4.
"""

from __future__ import annotations

import re

from bot.probes import system
from bot.probes.base import Absent, Model, ProbeContext, ProbeError
from bot.probes.system import SystemInfo

ARGV = ("borg", "--version")
SUPPORTED = (1, 4)

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(\S*)$")

# Versions of the distributions' own package, from their package indexes (packages.debian.org,
# packages.ubuntu.com). Only what was checked is listed; elsewhere the hint says how to check.
PACKAGED: dict[tuple[str, str], str] = {
    ("debian", "10"): "1.1.9",
    ("debian", "11"): "1.1.16",
    ("debian", "12"): "1.2.4",
    ("debian", "13"): "1.4.0",
    ("ubuntu", "22.04"): "1.2.0",
    ("ubuntu", "24.04"): "1.2.8",
}

_PIP_BUILD_DEPS = {
    "debian": "apt-get install -y python3-venv python3-dev gcc pkg-config libacl1-dev liblz4-dev libzstd-dev "
    "libxxhash-dev libssl-dev",
    "fedora": "dnf install -y python3-devel gcc pkgconf-pkg-config libacl-devel lz4-devel libzstd-devel "
    "xxhash-devel openssl-devel",
    "alpine": "apk add python3 python3-dev gcc musl-dev pkgconf acl-dev lz4-dev zstd-dev xxhash-dev openssl-dev "
    "linux-headers",
    "arch": "pacman -S --needed python gcc pkgconf acl lz4 zstd xxhash openssl",
    "suse": "zypper install -y python3-devel gcc pkg-config libacl-devel liblz4-devel libzstd-devel "
    "libxxhash-devel libopenssl-devel",
}
PIP_INSTALL = (
    "python3 -m venv /opt/borgbackup && /opt/borgbackup/bin/pip install 'borgbackup>=1.4,<1.5' && "
    "ln -sf /opt/borgbackup/bin/borg /usr/local/bin/borg"
)


class BorgVersion(Model):
    """A parsed ``borg --version``: ``1.4.5`` → (1, 4, 5, ""); ``2.0.0b14`` → (2, 0, 0, "b14")."""

    text: str  # the version as printed, e.g. "1.4.5"
    major: int
    minor: int
    patch: int
    suffix: str  # "", "b14", "rc1", ".dev12+g1234abc" …

    @property
    def prerelease(self) -> bool:
        return bool(self.suffix)


class BorgInfo(Model):
    """What the wizard shows about borg on a server."""

    present: bool
    version: str | None  # "1.4.5"
    supported: bool
    summary: str  # one sentence for people
    install_hint: str  # what to run to get a supported borg; "" when the installed one is supported


def parse_version(text: str) -> BorgVersion:
    """Parse ``borg --version`` output (first line ``<prog> <version>``); anything else raises ProbeError."""
    lines = text.strip().splitlines()
    fields = lines[0].split() if lines else []
    match = _VERSION.match(fields[1]) if len(fields) == 2 and "borg" in fields[0].lower() else None
    if match is None:
        shown = (lines[0] if lines else "nothing")[:80]
        raise ProbeError(
            f"`borg --version` printed {shown!r}, which is not a borg version; is `borg` on this server BorgBackup?"
        )
    major, minor, patch, suffix = match.groups()
    return BorgVersion(text=fields[1], major=int(major), minor=int(minor), patch=int(patch or 0), suffix=suffix)


def support_verdict(version: BorgVersion) -> tuple[bool, str]:
    """Whether the bot can drive this borg, and the sentence that explains it."""
    series = (version.major, version.minor)
    if series == SUPPORTED:
        if version.prerelease:
            return True, f"borg {version.text} is a pre-release of 1.4; it works, but a final 1.4.x is better."
        return True, f"borg {version.text} is installed and supported."
    if version.major >= 2:
        return False, (
            f"borg {version.text} is borg 2 (a beta whose repositories borg 1.x cannot read); the bot uses borg 1.4.x. "
            "Install borg 1.4 next to it or instead of it."
        )
    if series < SUPPORTED:
        return False, (
            f"borg {version.text} is installed, older than the 1.4 series the bot supports; upgrade it to 1.4.x."
        )
    return False, f"borg {version.text} is newer than the 1.4 series this bot knows; install borg 1.4.x."


def os_family(info: SystemInfo | None) -> str:
    """debian, fedora, alpine, arch, suse or "" — from ``ID`` and ``ID_LIKE`` of /etc/os-release."""
    if info is None:
        return ""
    ids = (info.os_id, *info.os_like)
    for family, names in (
        ("debian", ("debian", "ubuntu")),
        ("fedora", ("fedora", "rhel", "centos", "rocky", "almalinux", "ol")),
        ("alpine", ("alpine",)),
        ("arch", ("arch", "archlinux", "manjaro")),
        ("suse", ("suse", "opensuse", "sles", "opensuse-leap", "opensuse-tumbleweed")),
    ):
        if any(i in names for i in ids):
            return family
    return ""


def _package_command(info: SystemInfo, family: str) -> str:
    """The distribution's own install command for borg."""
    if family == "debian":
        return "apt-get update && apt-get install -y borgbackup"
    if family == "fedora":
        if info.os_id == "fedora":
            return "dnf install -y borgbackup"
        return "dnf install -y epel-release && dnf install -y borgbackup"  # RHEL and rebuilds: borg is in EPEL
    if family == "alpine":
        return "apk add borgbackup"
    if family == "arch":
        return "pacman -S borg"  # Arch calls the package "borg"
    return "zypper install -y borgbackup"


def _pip_hint(family: str) -> str:
    """Building 1.4 from PyPI: the distribution's build dependencies, then pip in a virtualenv (PEP 668 safe)."""
    deps = _PIP_BUILD_DEPS.get(family)
    needs = (
        f"install the build dependencies ({deps})"
        if deps
        else "install a C compiler and the development files of libacl, lz4, zstd, xxhash and OpenSSL"
    )
    return f"{needs}, then run: {PIP_INSTALL} (pip builds borg 1.4 from source in about 2 minutes)."


def install_hint(info: SystemInfo | None) -> str:
    """How to get borg 1.4 on this OS; says when the distribution's own package is older than 1.4."""
    family = os_family(info)
    if info is None or not family:
        name = info.os_name if info is not None and info.os_name else "this system"
        return f"No borg 1.4 package is known for {name}; {_pip_hint(family)}"
    package = _package_command(info, family)
    packaged = PACKAGED.get((info.os_id, info.os_version))
    name = info.os_name or info.os_id
    if packaged and tuple(int(p) for p in packaged.split(".")[:2]) >= SUPPORTED:
        return f"Install it with: {package} ({name} ships borg {packaged})."
    if packaged:
        return (
            f"{name} ships borg {packaged}, older than 1.4, so its package ({package}) is not enough; to get 1.4, "
            + _pip_hint(family)
        )
    return (
        f"Install it with: {package} — then check that it is 1.4.x (`borg --version`); if the package is older, "
        + _pip_hint(family)
    )


def from_version_output(text: str, info: SystemInfo | None) -> BorgInfo:
    """The verdict for a server whose ``borg --version`` printed ``text``."""
    version = parse_version(text)
    supported, sentence = support_verdict(version)
    return BorgInfo(
        present=True,
        version=version.text,
        supported=supported,
        summary=sentence,
        install_hint="" if supported else install_hint(info),
    )


def absent(info: SystemInfo | None) -> BorgInfo:
    """The verdict for a server without borg."""
    return BorgInfo(
        present=False,
        version=None,
        supported=False,
        summary="borg is not installed on this server (no `borg` on the login's PATH).",
        install_hint=install_hint(info),
    )


async def probe(ctx: ProbeContext, info: SystemInfo | None = None) -> BorgInfo:
    """Run ``borg --version``; a missing borg is an answer (with a hint), not a failure.

    ``info`` (or ``ctx.system``) chooses the install hint; without either, and only when a hint is needed,
    the system probe runs once more to learn the OS.
    """
    info = info or getattr(ctx, "system", None)
    try:
        result = await ctx.run(ARGV, what="`borg --version`")
    except Absent:
        return absent(info or await _system_info(ctx))
    verdict = from_version_output(result.out, info)
    if not verdict.supported and info is None:
        verdict = from_version_output(result.out, await _system_info(ctx))
    return verdict


async def _system_info(ctx: ProbeContext) -> SystemInfo | None:
    try:
        return await system.probe(ctx)
    except ProbeError:
        return None
