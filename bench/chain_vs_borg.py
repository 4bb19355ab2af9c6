"""Benchmark: a chain run vs a raw ``borg create`` of the same paths (issue 4's goal: ≤ 1.05×).

Both push the same ~1 GiB mixed data set (many small text files, some compressible and some random large
files) from a source sshd host to a pool sshd host over SSH, each into its own fresh repository (so
deduplication never favours the second one), alternating which goes first. The chain run includes what the
bot adds around borg: the proof that the archive is listed and the stats. Run as root (harness sshd).

    .venv/bin/python bench/chain_vs_borg.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.backup.jobs import ArchiveJob
from bot.backup.repository import PoolAccess, RepoSpec, set_up
from bot.backup.runner import ChainPlan, run_chain
from bot.borg import create
from bot.borg.repo import Repo
from bot.transport import SSHPool, SSHTarget
from tests.harness.sshd import SshdFactory


def make_data(root: Path, size_mib: int) -> int:
    """~size_mib MiB: 40 % random (incompressible), 40 % compressible text, 20 % as 4 KiB small files."""
    rng = random.Random(42)
    root.mkdir(parents=True, exist_ok=True)
    total, target = 0, size_mib * 1024 * 1024
    for i in range(int(target * 0.4) // (32 << 20) or 1):
        (root / f"random-{i}.bin").write_bytes(os.urandom(32 << 20))
        total += 32 << 20
    words = [rng.choice(["backup", "borg", "slack", "chain", "pool", "archive"]) for _ in range(4096)]
    text = (" ".join(words) + "\n").encode()
    for i in range(int(target * 0.4) // (16 << 20) or 1):
        (root / f"text-{i}.log").write_bytes(text * ((16 << 20) // len(text)))
        total += 16 << 20
    small = root / "small"
    small.mkdir(exist_ok=True)
    for i in range(int(target * 0.2) // 4096):
        (small / f"f{i:06d}.txt").write_bytes(os.urandom(2048) + text[:2048])
        total += 4096
    return total


async def main(size_mib: int, repeat: int) -> None:
    factory = SshdFactory()
    try:
        source, pool_host = factory("bench-src"), factory("bench-pool")
        data = source.workdir / "data"
        print(f"data set: {make_data(data, size_mib) / 2**20:.0f} MiB in {data}")
        pool = SSHPool([asyncssh.read_private_key(source.client_key_path),
                        asyncssh.read_private_key(pool_host.client_key_path)])  # fmt: skip
        src_t = pool.transport(SSHTarget(source.host, source.port, source.user, source.host_public_key))
        access = PoolAccess(pool.transport(SSHTarget(pool_host.host, pool_host.port, pool_host.user,
                                                     pool_host.host_public_key)),
                            pool_host.host, pool_host.port, pool_host.user, pool_host.host_public_key)  # fmt: skip
        raw_times, chain_times = [], []
        for round_ in range(repeat):
            for mode in ("raw", "chain") if round_ % 2 == 0 else ("chain", "raw"):
                spec = RepoSpec(name=f"{mode}-{round_}", base_path=str(pool_host.workdir / "repos"))
                setup = await set_up(src_t, access, spec)
                repo = setup.source_repo(access, str(source.home), base_dir=str(source.workdir / f"bb-{mode}-{round_}"))
                started = time.perf_counter()
                if mode == "raw":
                    await create.run(src_t, repo, create.paths_argv(repo, "raw", [str(data)], create.CreateOptions()))
                    raw_times.append(time.perf_counter() - started)
                else:
                    plan = ChainPlan(prefix=spec.name, jobs=[ArchiveJob(suffix="files", kind="paths",
                                                                        paths=(str(data),))],
                                     source=src_t, repo_at_source=repo, pool=access.transport,
                                     repo_at_pool=Repo(url=spec.path, passphrase=setup.passphrase))  # fmt: skip
                    result = await run_chain(plan)
                    assert result.status == "ok", result.reason
                    chain_times.append(time.perf_counter() - started)
                shutil.rmtree(spec.path, ignore_errors=True)
        raw, chain = statistics.median(raw_times), statistics.median(chain_times)
        print(f"raw borg create: median {raw:.2f} s ({', '.join(f'{t:.2f}' for t in raw_times)})")
        print(f"chain run:       median {chain:.2f} s ({', '.join(f'{t:.2f}' for t in chain_times)})")
        print(f"ratio chain/raw: {chain / raw:.3f}x (goal <= 1.05x)")
        await pool.close()
    finally:
        factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.repeat))
