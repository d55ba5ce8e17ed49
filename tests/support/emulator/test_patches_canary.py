"""The emulator patch canary analysis depends on (aa), checked against what real AWS does:
GetMetricData reads the metric it names (namespace, name, exact dimensions).

Every test_patch_* here fails on plain moto 5.2.5 (BAKERY_EMULATOR_NO_PATCHES=1).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone


def _stat(qid, ns, name, dims, stat="Average"):
    return {"Id": qid, "MetricStat": {"Metric": {"Namespace": ns, "MetricName": name, "Dimensions": [
        {"Name": k, "Value": v} for k, v in dims.items()]}, "Period": 60, "Stat": stat},
        "ReturnData": True}


def test_patch_aa_get_metric_data_reads_one_namespace_and_exact_dimensions(emu):
    cw = emu.client("cloudwatch")
    group = f"shop-{uuid.uuid4().hex[:6]}"
    t0 = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    # One metric name in two namespaces, with one and two dimensions, and without any.
    puts = [
        ("Shop/App", {"AutoScalingGroupName": group}, 1.0),
        ("Other/App", {"AutoScalingGroupName": group}, 100.0),
        ("Shop/App", {"AutoScalingGroupName": group, "Zone": "a"}, 1000.0),
        ("Shop/App", {}, 10000.0),
    ]
    for ns, dims, value in puts:
        cw.put_metric_data(Namespace=ns, MetricData=[{
            "MetricName": "errors", "Timestamp": t0 + timedelta(minutes=i), "Value": value + i,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]} for i in range(5)])
    got = cw.get_metric_data(
        MetricDataQueries=[
            _stat("one", "Shop/App", "errors", {"AutoScalingGroupName": group}),
            _stat("other", "Other/App", "errors", {"AutoScalingGroupName": group}),
            _stat("two", "Shop/App", "errors", {"Zone": "a", "AutoScalingGroupName": group}),
            _stat("none", "Shop/App", "errors", {}),
        ],
        StartTime=t0, EndTime=t0 + timedelta(minutes=5), ScanBy="TimestampAscending")
    values = {r["Id"]: r["Values"] for r in got["MetricDataResults"]}
    assert values["one"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert values["other"] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert values["two"] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert values["none"] == [10000.0, 10001.0, 10002.0, 10003.0, 10004.0]
    # Newest first unless asked otherwise (AWS's default ScanBy).
    got = cw.get_metric_data(
        MetricDataQueries=[_stat("one", "Shop/App", "errors", {"AutoScalingGroupName": group}, "Sum")],
        StartTime=t0, EndTime=t0 + timedelta(minutes=5))
    assert got["MetricDataResults"][0]["Values"] == [5.0, 4.0, 3.0, 2.0, 1.0]
