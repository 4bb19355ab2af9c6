"""Benchmark: capabilities of 50 servers vs one server, in the same run (issue 3's goal: ≤ 2×).

Starts N real sshd instances on 127.0.0.2 … (the test harness's factory, so run as root), probes one server
alone, then all N at once through one SSHPool, and prints both times and the ratio. Each "server" is the
same machine, so the 50-server run also measures this machine's 2 cores running 50× the remote commands;
that is the honest worst case for the bot's concurrency (on real fleets the remote work is spread out).
So it also prints the machine's CPU seconds (everything: sshd, shells, the probed programs) and the bot
process's own CPU seconds: when the first divided by the cores is close to the wall time, the run is bound
by the remote commands sharing this machine, not by the bot.

    .venv/bin/python bench/capabilities_50.py [--servers 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.probes.base import ProbeContext
from bot.probes.capabilities import gather
from bot.probes.registry import default_specs
from bot.transport import SSHPool, SSHTarget
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print the slowest duration of each probe")
    args = parser.parse_args()
    VERBOSE = args.verbose
    asyncio.run(main(args.servers, args.repeat))
