#!/usr/bin/env python3
"""Write baseline.csv and canary.csv for examples/canary/canary.yaml: 60 one-minute points per
metric per side, the canary with more 5xx errors, a slower p99 and fewer cache hits (fixed seed,
standard library only). Rerun to refresh the example; `bakery canary judge` reads the result."""
import csv
import random

START = 1_764_489_600  # 2025-11-30T08:00:00Z
rnd = random.Random(16)


def series(centre, spread, n=60, shape="normal"):
    out = []
    for _ in range(n):
        if shape == "counts":
            out.append(max(0, round(rnd.gauss(centre, spread))))
        else:
            out.append(round(rnd.gauss(centre, spread), 3))
    return out


BASELINE = {
    "requests-per-second": series(850, 40), "http-5xx": series(2, 1.2, shape="counts"),
    "http-4xx": series(14, 3.5, shape="counts"), "latency-p50-ms": series(38, 3),
    "latency-p99-ms": series(210, 18), "cache-hit-ratio": series(0.91, 0.015),
    "cpu-percent": series(41, 4), "memory-mb": series(2150, 35), "gc-pause-ms": series(11, 2.5),
    "threads": series(212, 3, shape="counts"), "db-connections": series(24, 2, shape="counts"),
    "queue-depth": series(3, 1.5, shape="counts"),
}
CANARY = {
    "requests-per-second": series(846, 40), "http-5xx": series(9, 2.5, shape="counts"),
    "http-4xx": series(14, 3.5, shape="counts"), "latency-p50-ms": series(38.5, 3),
    "latency-p99-ms": series(265, 22), "cache-hit-ratio": series(0.86, 0.015),
    "cpu-percent": series(43, 4), "memory-mb": series(2160, 35), "gc-pause-ms": series(11.4, 2.5),
    "threads": series(212, 3, shape="counts"), "db-connections": series(24, 2, shape="counts"),
}  # queue-depth: the canary's exporter is missing it (no data)

for name, side in (("baseline.csv", BASELINE), ("canary.csv", CANARY)):
    with open(name, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["metric", "timestamp", "value"])
        for metric, values in side.items():
            for i, v in enumerate(values):
                w.writerow([metric, START + 60 * i, v])
