"""The borg probe: the real borg (the venv's 1.4.x) over real sshd, a server without borg, and the parser and
install hints on version strings and OS descriptions of several distributions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.probes import borg, system
from bot.probes.base import ProbeError
from bot.probes.system import SystemInfo

RECORDED = Path(__file__).parent / "data" / "probes"


def os_info(os_id: str, version: str, *, like: tuple[str, ...] = (), name: str = "") -> SystemInfo:
    return SystemInfo(
        hostname="h", os_id=os_id, os_like=like, os_name=name or f"{os_id} {version}", os_version=version,
        kernel="6.1.0", arch="x86_64", cpus=2, memory_bytes=2**31, memory_available_bytes=2**30, user="root",
        is_root=True, sudo="root",
    )  # fmt: skip


# --- real borg over real sshd ----------------------------------------------------------------------------------


async def test_real_borg_over_ssh_is_found_and_supported(make_sshd, ctx_for, borg_env) -> None:
    host = make_sshd("borgyes", with_borg=True)
    info = await borg.probe(ctx_for(host))
    assert info.present and info.supported
    assert info.version == borg_env.version  # what the venv's borg says locally, e.g. "1.4.5"
    assert info.version.startswith("1.4.")
    assert info.summary == f"borg {borg_env.version} is installed and supported."
    assert info.install_hint == ""


async def test_server_without_borg_gets_the_debian_hint(make_sshd, ctx_for) -> None:
    host = make_sshd("borgno", with_borg=False)
    ctx = ctx_for(host)
    info = await borg.probe(ctx)  # no SystemInfo given: the probe asks the system probe itself
    assert not info.present and not info.supported and info.version is None
    assert "not installed" in info.summary
    here = await system.probe(ctx)
    if (here.os_id, here.os_version) != ("debian", "12"):
        pytest.skip(f"this check expects the Debian 12 test machine, found {here.os_id} {here.os_version}")
    assert "apt-get" in info.install_hint and "borgbackup" in info.install_hint
    assert "ships borg 1.2.4, older than 1.4" in info.install_hint
    assert "pip install 'borgbackup>=1.4,<1.5'" in info.install_hint


async def test_old_borg_on_a_server_is_present_but_unsupported(make_sshd, ctx_for) -> None:
    # A stand-in `borg` (a two-line script printing what Debian 12's borg 1.2.4 prints) on the host's PATH: the
    # real ssh session, PATH lookup and parsing are exercised; only the program is fake.
    host = make_sshd("borgold", with_borg=False)
    stand_in = host.workdir / "bin" / "borg"
    stand_in.write_text("#!/bin/sh\necho 'borg 1.2.4'\n")
    stand_in.chmod(0o755)
    info = await borg.probe(ctx_for(host), os_info("debian", "12"))
    assert (info.present, info.version, info.supported) == (True, "1.2.4", False)
    assert "older than the 1.4 series" in info.summary
    assert "pip install" in info.install_hint and "1.2.4" in info.install_hint


# --- parser ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "version", "supported", "words"),
    [
        ("borg 1.4.5\n", "1.4.5", True, "installed and supported"),
        ("borg-linux64 1.4.0\n", "1.4.0", True, "installed and supported"),  # the standalone binary's name
        ("borg 1.4.0rc1\n", "1.4.0rc1", True, "pre-release of 1.4"),
        ("borg 1.4.1.dev12+g1234abc\n", "1.4.1.dev12+g1234abc", True, "pre-release of 1.4"),
        ("borg 1.2.4\n", "1.2.4", False, "older than the 1.4 series"),  # Debian 12
        ("borg 1.1.16\n", "1.1.16", False, "older than the 1.4 series"),  # Debian 11
        ("borg2 2.0.0b14\n", "2.0.0b14", False, "borg 2 (a beta"),  # Debian's borgbackup2
        ("borg 2.0.0\n", "2.0.0", False, "borg 2"),
        ("borg 1.5.0\n", "1.5.0", False, "newer than the 1.4 series"),
    ],
)
def test_version_strings(output: str, version: str, supported: bool, words: str) -> None:
    info = borg.from_version_output(output, os_info("debian", "12"))
    assert (info.present, info.version, info.supported) == (True, version, supported)
    assert words in info.summary
    assert (info.install_hint == "") is supported


@pytest.mark.parametrize(
    "garbage",
    ["", "\n", "borg\n", "borg version 1.4.5\n", "Usage: borg [-h] ...\n", "zsh: segmentation fault\n", "borg x.y\n"],
)
def test_garbage_version_output_is_a_sentence(garbage: str) -> None:
    with pytest.raises(ProbeError, match="not a borg version"):
        borg.parse_version(garbage)


def test_parsed_parts() -> None:
    v = borg.parse_version("borg 2.0.0b14\n")
    assert (v.major, v.minor, v.patch, v.suffix, v.prerelease) == (2, 0, 0, "b14", True)
    assert borg.parse_version("borg 1.4\n").patch == 0


# --- install hints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "expected", "unexpected"),
    [
        (os_info("debian", "12"), ["apt-get install -y borgbackup", "ships borg 1.2.4, older than 1.4", "pip install",
                                   "libacl1-dev"], []),
        (os_info("debian", "13"), ["apt-get install -y borgbackup", "ships borg 1.4.0"], ["pip"]),
        (os_info("ubuntu", "24.04", like=("debian",)), ["ships borg 1.2.8, older than 1.4", "pip install"], []),
        (os_info("linuxmint", "22", like=("ubuntu", "debian")), ["apt-get install -y borgbackup",
                                                                 "check that it is 1.4.x"], []),
        (os_info("fedora", "41"), ["dnf install -y borgbackup", "check that it is 1.4.x"], ["epel"]),
        (os_info("rocky", "9.4", like=("rhel", "centos", "fedora")), ["dnf install -y epel-release"], []),
        (os_info("arch", ""), ["pacman -S borg"], []),
        (os_info("opensuse-tumbleweed", "20250101", like=("opensuse", "suse")), ["zypper install -y borgbackup"], []),
        (os_info("gentoo", "2.15"), ["No borg 1.4 package is known for gentoo 2.15", "pip install"], []),
        (None, ["pip install 'borgbackup>=1.4,<1.5'"], []),
    ],
)  # fmt: skip
def test_install_hints_per_os(info: SystemInfo | None, expected: list[str], unexpected: list[str]) -> None:
    hint = borg.install_hint(info)
    for words in expected:
        assert words in hint
    for words in unexpected:
        assert words not in hint


def test_alpine_hint_from_recorded_system_output() -> None:
    # system_alpine.txt is the (constructed, see its .source) output of the system probe on Alpine 3.20.
    info = system.parse_system((RECORDED / "system_alpine.txt").read_text())
    absent = borg.absent(info)
    assert "apk add borgbackup" in absent.install_hint
    assert "apk add python3 python3-dev" in absent.install_hint  # build dependencies for the pip route


def test_absent_verdict_round_trips_as_cached_json() -> None:
    verdict = borg.absent(os_info("debian", "12"))
    assert borg.BorgInfo.model_validate_json(verdict.model_dump_json()) == verdict
