"""Soak: the stress scenario (tests/test_stress.py) on one long-lived poller for minutes,
with the process's RSS and open fd count sampled every 10 s. Both should stay flat.

    python benchmarks/soak.py [--minutes 10] [--connections 9000] [--backend trio]

Prints one line per sample and the stress totals at the end. Not run in CI (too long).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_stress import run_stress


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def sampler(stop: threading.Event, every: float, samples: list[tuple[float, int, int]]) -> None:
    start = time.monotonic()
    while not stop.wait(every):
        sample = (time.monotonic() - start, rss_kib(), len(os.listdir("/proc/self/fd")))
        samples.append(sample)
        print(f"t={sample[0]:6.0f}s  rss={sample[1] / 1024:7.1f} MiB  fds={sample[2]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=9000)
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    thread = threading.Thread(target=sampler, args=(stop, args.every, samples), daemon=True)
    thread.start()
    try:
        totals = anyio.run(
            run_stress, 10**12, args.connections, 1, args.minutes * 60, backend=args.backend
        )
    finally:
        stop.set()
        thread.join()
    print(f"totals: {totals}")
    if len(samples) >= 3:
        warm = samples[1:]  # the first sample includes the ramp-up
        rss = [s[1] for s in warm]
        fds = [s[2] for s in warm]
        print(
            f"after warm-up: rss {min(rss) / 1024:.1f}..{max(rss) / 1024:.1f} MiB, "
            f"fds {min(fds)}..{max(fds)}"
        )


if __name__ == "__main__":
    main()
