"""Benchmark: capabilities of 50 servers vs one server, in the same run (issue 3's goal: ≤ 2×).

Starts N real sshd instances on 127.0.0.2 … (the test harness's factory, so run as root), probes one server
alone, then all N at once through one SSHPool, and prints both times and the ratio. Each "server" is the
same machine, so the 50-server run also measures this machine's 2 cores running 50× the remote commands;
that is the honest worst case for the bot's concurrency (on real fleets the remote work is spread out).

    .venv/bin/python bench/capabilities_50.py [--servers 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.probes.base import ProbeContext  # noqa: E402
from bot.probes.capabilities import gather  # noqa: E402
from bot.probes.registry import default_specs  # noqa: E402
from bot.transport import SSHPool, SSHTarget  # noqa: E402
from tests.harness.sshd import SshdFactory  # noqa: E402


async def probe_all(pool: SSHPool, hosts: list, specs: list) -> tuple[float, int]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            gather(ProbeContext(pool.transport(SSHTarget(h.host, h.port, h.user, h.host_public_key))), specs)
            for h in hosts
        )
    )
    failed = sum(1 for caps in results for o in caps.outcomes.values() if o.kind in ("unreachable", "bug"))
    return time.perf_counter() - started, failed


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
            pool = SSHPool([key])
            seconds, failed_one = await probe_all(pool, hosts[:1], specs)
            one.append(seconds)
            await pool.close()
            pool = SSHPool([key])
            seconds, failed_many = await probe_all(pool, hosts, specs)
            many.append(seconds)
            await pool.close()
        t1, tn = statistics.median(one), statistics.median(many)
        print(f"probes per server: {len(specs) + 1}")
        print(f"1 server:   median {t1:.2f} s over {repeat} run(s): {', '.join(f'{x:.2f}' for x in one)}")
        print(f"{servers} servers: median {tn:.2f} s over {repeat} run(s): {', '.join(f'{x:.2f}' for x in many)}")
        print(f"ratio {servers}/1: {tn / t1:.2f}x (goal <= 2.00x); unreachable/bug outcomes: {failed_one + failed_many}")
    finally:
        factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.servers, args.repeat))
