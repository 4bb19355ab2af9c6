"""The system probe and the capabilities aggregate against real sshd hosts.

The aggregate is exercised with a few probes of our own making (a garbage printer, a hanging command, a
missing program) next to the real system probe, to prove that one broken probe never hides the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.probes import system
from bot.probes.base import Model, ProbeContext, ProbeError
from bot.probes.capabilities import Capabilities, ProbeSpec, gather

RECORDED = Path(__file__).parent / "data" / "probes"


class Echo(Model):
    text: str


async def _garbage(ctx: ProbeContext) -> Echo:
    result = await ctx.run(["sh", "-c", "printf '\\001\\002 not json'"], what="garbage")
    if not result.out.startswith("{"):
        raise ProbeError("The garbage probe printed something that is not JSON.")
    return Echo(text=result.out)


async def _hang(ctx: ProbeContext) -> Echo:
    await ctx.run(["sleep", "30"], what="hang", timeout=0.5)
    return Echo(text="never")


async def _missing(ctx: ProbeContext) -> Echo:
    await ctx.run(["no-such-program-xyz"], what="missing")
    return Echo(text="never")


async def _crash(ctx: ProbeContext) -> Echo:
    raise KeyError("parser bug")


async def _whoami(ctx: ProbeContext) -> Echo:
    result = await ctx.run(["id", "-un"], what="whoami", privileged=True)
    return Echo(text=result.out.strip())


SPECS = [
    ProbeSpec("garbage", _garbage, Echo),
    ProbeSpec("hang", _hang, Echo),
    ProbeSpec("missing", _missing, Echo),
    ProbeSpec("crash", _crash, Echo),
    ProbeSpec("whoami", _whoami, Echo),
]


async def test_system_probe_as_root(make_sshd, ctx_for) -> None:
    host = make_sshd("sysroot")
    info = await system.probe(ctx_for(host))
    assert info.hostname == "sysroot"
    assert info.is_root and info.privileged and info.sudo == "root"
    assert info.os_id and info.kernel and info.arch and info.cpus and info.memory_bytes
    assert info.privilege_note == ""


async def test_system_probe_as_user_without_sudo(make_sshd, ctx_for) -> None:
    host = make_sshd("sysuser", nonroot=True)
    info = await system.probe(ctx_for(host))
    assert not info.is_root and not info.privileged
    assert info.user == host.user
    assert host.user in info.privilege_note and "root" in info.privilege_note


def test_system_parser_rejects_garbage_and_reads_recorded_output() -> None:
    with pytest.raises(ProbeError, match="unexpected"):
        system.parse_system("\x00\x01 random bytes\n@uid\nnot-a-number\n")
    info = system.parse_system((RECORDED / "system_alpine.txt").read_text())
    assert (info.os_id, info.os_version, info.sudo, info.is_root) == ("alpine", "3.20.3", "absent", False)
    assert info.memory_bytes == 2014548 * 1024


async def test_one_broken_probe_never_hides_the_others(make_sshd, ctx_for) -> None:
    host = make_sshd("caps")
    caps = await gather(ctx_for(host), SPECS)
    out = caps.outcomes
    assert out["system"].ok and caps.get("system", system.SystemInfo).hostname == "caps"
    assert out["whoami"].ok and caps.get("whoami", Echo).text == "root"
    assert (out["garbage"].kind, out["garbage"].error) == (
        "error",
        "The garbage probe printed something that is not JSON.",
    )
    assert out["hang"].kind == "timeout" and "did not finish within 0.5 s" in out["hang"].error
    assert out["missing"].kind == "absent" and "no-such-program-xyz" in out["missing"].error
    assert out["crash"].kind == "bug" and "KeyError" in out["crash"].error
    # The cache format round-trips.
    again = Capabilities.model_validate_json(caps.model_dump_json())
    assert again.get("whoami", Echo) == Echo(text="root")
    assert set(again.problems()) == {"garbage", "hang", "missing", "crash"}


async def test_unreachable_server_marks_every_probe_not_attempted(make_sshd, ctx_for) -> None:
    host = make_sshd("gone")
    ctx = ctx_for(host)
    host.stop()
    caps = await gather(ctx, SPECS)
    assert {o.kind for o in caps.outcomes.values()} == {"unreachable"}
    assert all("refused" in o.error for o in caps.outcomes.values())
    assert caps.outcomes["whoami"].error.startswith("Not attempted:")


async def test_non_root_without_sudo_fails_privileged_probes_clearly(make_sshd, ctx_for) -> None:
    host = make_sshd("nosudo", nonroot=True)
    caps = await gather(ctx_for(host), [ProbeSpec("whoami", _whoami, Echo)])
    # Not privileged: the probe runs as the user itself (no sudo to go through) and says who it is.
    assert caps.get("whoami", Echo).text == host.user
    assert not caps.get("system", system.SystemInfo).privileged


async def test_default_capabilities_of_a_real_server(make_sshd, ctx_for) -> None:
    """Every probe of the real table runs against a real server; each either answers or says why not."""
    from bot.probes import borg, disk, mysql, postgresql, snapshots
    from bot.probes.registry import default_specs

    host = make_sshd("fullcaps")
    caps = await gather(ctx_for(host), default_specs())
    assert set(caps.outcomes) == {"system", *(s.name for s in default_specs())}
    assert caps.get("borg", borg.BorgInfo).supported
    assert caps.get("disk", disk.MountInfo).target == "/"
    assert caps.get("snapshots", snapshots.SnapshotMethods).path == "/"
    assert caps.get("mysql", mysql.MySQLInfo).running  # the machine's MariaDB, via root's socket login
    assert caps.get("postgresql", postgresql.PgInfo).running
    mongo = caps.outcomes["mongodb"]
    assert not mongo.ok and mongo.kind == "absent"  # no MongoDB client can be installed here
    for outcome in caps.outcomes.values():
        assert outcome.ok or (outcome.error and outcome.kind != "bug"), outcome
    assert Capabilities.model_validate_json(caps.model_dump_json()).get("mysql", mysql.MySQLInfo)
