#!/usr/bin/env python3
"""Data for bench/run's `judge` case: METRICS metrics x 2 sides x POINTS points.

    bench/canary_data.py DIR METRICS POINTS

Writes DIR/canary.yaml (metrics in 4 groups, a third `direction: increase`, every fifth with
outlier removal), DIR/baseline.csv and DIR/canary.csv (`metric,timestamp,value`, one point a
minute; every tenth metric's canary shifted up by half a standard deviation, values on a 0.001
grid) and DIR/reference.json (the same case for tests/support/stats/reference.py, the peer).
Fixed seed: every run judges the same data."""
import csv
import json
import random
import sys

out, n_metrics, n_points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(100)
start = 1_764_489_600
groups = ["errors", "latency", "traffic", "system"]
metrics, base, can = [], {}, {}
for i in range(n_metrics):
    m = {"name": f"metric-{i:03d}", "group": groups[i % 4]}
    if i % 3 == 0:
        m["direction"] = "increase"
    if i % 5 == 0:
        m["outliers"] = {"strategy": "remove"}
    metrics.append(m)
    centre, sd = rnd.uniform(10, 1000), rnd.uniform(1, 50)
    shift = 0.5 * sd if i % 10 == 0 else 0.0
    base[m["name"]] = [round(rnd.gauss(centre, sd), 3) for _ in range(n_points)]
    can[m["name"]] = [round(rnd.gauss(centre + shift, sd), 3) for _ in range(n_points)]
config = {"groups": {"errors": 40}, "metrics": metrics}
with open(f"{out}/canary.yaml", "w") as f:
    json.dump(config, f, indent=1)  # JSON is YAML
for name, side in (("baseline", base), ("canary", can)):
    with open(f"{out}/{name}.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["metric", "timestamp", "value"])
        for metric, values in side.items():
            for k, v in enumerate(values):
                w.writerow([metric, start + 60 * k, v])
with open(f"{out}/reference.json", "w") as f:
    json.dump({"cases": [{"id": 0, "config": config, "baseline": base, "canary": can}]}, f)
