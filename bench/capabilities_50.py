"""Benchmark: capabilities of 50 servers vs one server, in the same run.

Two modes. ``--mode replay`` (issue 13; goal ≤ 1.5×) shows the bot's own fan-out: the probe outputs of one real
sshd are recorded once, then N servers in ONE process (tests/harness/replay_sshd.py, asyncssh's server side) answer
every probe command from that recording after a fixed 200 ms delay, without running anything. Servers then cost no
CPU beyond their SSH protocol work, so 50 servers should take about as long as one: what is added is the bot's own
work (connections through the reworked SSHPool, channels, parsing). It prints both times, the ratio, the bot's CPU
per server and the replay process's CPU.

``--mode sshd`` (issue 3; goal ≤ 2×): starts N real sshd instances on 127.0.0.2 … (the test harness's factory, so
run as root), probes one server alone, then all N at once through one SSHPool, and prints both times and the ratio.
Each "server" is the same machine, so the 50-server run also measures this machine's 2 cores running 50× the remote
commands; that is the honest worst case for the bot's concurrency (on real fleets the remote work is spread out).
So it also prints the machine's CPU seconds (everything: sshd, shells, the probed programs) and the bot process's
own CPU seconds: when the first divided by the cores is close to the wall time, the run is bound by the remote
commands sharing this machine, not by the bot.

    .venv/bin/python bench/capabilities_50.py [--mode replay|sshd] [--servers 50] [--repeat 3] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.probes.base import ProbeContext
from bot.probes.capabilities import gather
from bot.probes.registry import default_specs
from bot.transport import CommandResult, SSHPool, SSHTarget, Transport
from bot.transport.command import shell_command
from tests.harness.replay_sshd import Answer, save_answers
from tests.harness.sshd import SshdFactory

VERBOSE = False
TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def bot_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def probe_all(pool: SSHPool, hosts: list, specs: list) -> tuple[float, int, float, float]:
    """Wall seconds, failed outcomes, machine CPU seconds, bot CPU seconds."""
    busy, own = machine_busy_seconds(), bot_cpu_seconds()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            gather(ProbeContext(pool.transport(SSHTarget(h.host, h.port, h.user, h.host_public_key))), specs)
            for h in hosts
        )
    )
    elapsed = time.perf_counter() - started
    if VERBOSE:
        slowest: dict[str, float] = {}
        for caps in results:
            for o in caps.outcomes.values():
                slowest[o.name] = max(slowest.get(o.name, 0.0), o.seconds)
        print("  outcomes of the first server: " + ", ".join(
            f"{o.name}={'ok' if o.ok else o.kind}" for o in results[0].outcomes.values()))  # fmt: skip
        print(
            "  slowest per probe: "
            + ", ".join(f"{k} {v:.2f}s" for k, v in sorted(slowest.items(), key=lambda kv: -kv[1]))
        )
    failed = [(caps.target, o) for caps in results for o in caps.outcomes.values() if o.kind in ("unreachable", "bug")]
    for target, outcome in failed[:5]:
        print(f"  {target} {outcome.name}: {outcome.kind}: {outcome.error}")
    return elapsed, len(failed), machine_busy_seconds() - busy, bot_cpu_seconds() - own


async def main(servers: int, repeat: int) -> None:
    factory = SshdFactory()
    try:
        key_path = None
        hosts = []
        for i in range(servers):
            host = factory(f"bench{i}", client_key=key_path)
            key_path = key_path or host.client_key_path
            hosts.append(host)
        key = asyncssh.read_private_key(key_path)
        specs = default_specs()
        one, many = [], []
        for _ in range(repeat):
            # Fresh pools each time: connection set-up is part of what a first probe costs.
            for subset, into in ((hosts[:1], one), (hosts, many)):
                pool = SSHPool([key])
                into.append(await probe_all(pool, subset, specs))
                await pool.close()
        t1, tn = statistics.median(r[0] for r in one), statistics.median(r[0] for r in many)
        failed_one, failed_many = sum(r[1] for r in one), sum(r[1] for r in many)
        cpu1, cpun = statistics.median(r[2] for r in one), statistics.median(r[2] for r in many)
        bot1, botn = statistics.median(r[3] for r in one), statistics.median(r[3] for r in many)
        cores = os.cpu_count() or 1
        print(f"probes per server: {len(specs) + 1}")
        print(f"1 server:   median {t1:.2f} s over {repeat} run(s): {', '.join(f'{r[0]:.2f}' for r in one)}")
        print(f"{servers} servers: median {tn:.2f} s over {repeat} run(s): {', '.join(f'{r[0]:.2f}' for r in many)}")
        print(f"ratio {servers}/1: {tn / t1:.2f}x (goal <= 2.00x)")
        print(f"unreachable/bug outcomes: {failed_one} (1 server), {failed_many} ({servers} servers)")
        print(
            f"machine CPU: {cpu1:.1f} s (1 server), {cpun:.1f} s ({servers} servers) on {cores} cores; "
            f"the {servers}-server run cannot finish before {cpun / cores:.1f} s on this machine"
        )
        print(
            f"bot process CPU: {bot1:.2f} s (1 server), {botn:.2f} s ({servers} servers) = "
            f"{botn / servers * 1000:.0f} ms per server"
        )
    finally:
        factory.close()


class Recorder:
    """A transport that records each command's result under the exact string the pool sends a server without GNU
    ``timeout`` (what the replay servers receive: they answer ``timeout --version`` with "not GNU")."""

    def __init__(self, inner: Transport, username: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.username = username
        self.answers: dict[str, Answer] = {}

    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
                  secret_env: Mapping[str, str] | None = None, timeout: float | None = None, sudo: bool = False,
                  on_stderr=None) -> CommandResult:  # fmt: skip
        result = await self.inner.run(argv, stdin=stdin, env=env, secret_env=secret_env, timeout=timeout, sudo=sudo,
                                      on_stderr=on_stderr)  # fmt: skip
        command, _ = shell_command(argv, env=env, secret_env=secret_env, sudo=sudo and self.username != "root")
        self.answers[command] = Answer(result.stdout, result.stderr, 127 if result.exit_status is None else
                                       result.exit_status)  # fmt: skip
        return result

    async def close(self) -> None:
        return None


async def record(specs: list) -> tuple[dict[str, Answer], Path]:
    """Probe one real sshd once, recording every answer; return them and the client key that logged in."""
    factory = SshdFactory()
    try:
        host = factory("recorded")
        pool = SSHPool([asyncssh.read_private_key(host.client_key_path)])
        recorder = Recorder(pool.transport(SSHTarget(host.host, host.port, host.user, host.host_public_key)), host.user)
        caps = await gather(ProbeContext(recorder), specs)
        await pool.close()
        if VERBOSE:
            print("  recorded outcomes: " + ", ".join(f"{o.name}={'ok' if o.ok else o.kind}"
                                                   for o in caps.outcomes.values()))  # fmt: skip
        key = Path(tempfile.mkdtemp(prefix="bench-caps-")) / "client_ed25519"
        key.write_bytes(host.client_key_path.read_bytes())
        key.chmod(0o600)
        return recorder.answers, key
    finally:
        factory.close()


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def main_replay(servers: int, repeat: int, delay: float) -> None:
    """Record one real server's answers, start the replay process (one for all servers), measure, print."""
    specs = default_specs()
    answers, key_path = asyncio.run(record(specs))
    answers_path = key_path.parent / "answers.json"
    save_answers(answers_path, answers)
    replay = subprocess.Popen([sys.executable, "-m", "tests.harness.replay_sshd", str(answers_path), "--count",
                               str(servers), "--delay", str(delay)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    try:
        started = json.loads(replay.stdout.readline())  # type: ignore[union-attr]
        hosts = [argparse.Namespace(host="127.0.0.1", port=port, user="root", host_public_key=started["host_key"])
                 for port in started["ports"]]  # fmt: skip
        replay_cpu = process_cpu_seconds(replay.pid)
        one, many = asyncio.run(measure(hosts, asyncssh.read_private_key(key_path), specs, repeat))
        replay_cpu = process_cpu_seconds(replay.pid) - replay_cpu
    finally:
        replay.stdin.close()  # type: ignore[union-attr]
        try:
            replay.wait(10)
        except subprocess.TimeoutExpired:
            replay.kill()
    t1, tn = statistics.median(r[0] for r in one), statistics.median(r[0] for r in many)
    bot1, botn = statistics.median(r[3] for r in one), statistics.median(r[3] for r in many)
    print(f"recorded answers: {len(answers)} commands; probes per server: {len(specs) + 1}; "
          f"reply delay {delay * 1000:.0f} ms")  # fmt: skip
    print(f"1 server:   median {t1:.2f} s over {repeat} run(s): {', '.join(f'{r[0]:.2f}' for r in one)}")
    print(f"{servers} servers: median {tn:.2f} s over {repeat} run(s): {', '.join(f'{r[0]:.2f}' for r in many)}")
    print(f"ratio {servers}/1: {tn / t1:.2f}x (goal <= 1.50x)")
    print(f"unreachable/bug outcomes: {sum(r[1] for r in one)} (1 server), {sum(r[1] for r in many)} "
          f"({servers} servers)")  # fmt: skip
    print(f"bot process CPU: {bot1:.2f} s (1 server), {botn:.2f} s ({servers} servers) = "
          f"{botn / servers * 1000:.0f} ms per server")  # fmt: skip
    print(f"replay servers' process CPU (SSH protocol only), all {repeat * (servers + 1)} server probings: "
          f"{replay_cpu:.1f} s")  # fmt: skip


async def measure(hosts: list, key: asyncssh.SSHKey, specs: list, repeat: int) -> tuple[list, list]:
    """One server alone, then all, ``repeat`` times; each with a fresh pool (connection set-up is part of it)."""
    one, many = [], []
    for _ in range(repeat):
        for subset, into in ((hosts[:1], one), (hosts, many)):
            pool = SSHPool([key])  # the reworked pool with its default limits
            into.append(await probe_all(pool, subset, specs))
            await pool.close()
    return one, many


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("replay", "sshd"), default="replay")
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.2, help="replay mode: seconds before each answer")
    parser.add_argument("--verbose", action="store_true", help="print the slowest duration of each probe")
    args = parser.parse_args()
    VERBOSE = args.verbose
    if args.mode == "replay":
        main_replay(args.servers, args.repeat, args.delay)
    else:
        asyncio.run(main(args.servers, args.repeat))
