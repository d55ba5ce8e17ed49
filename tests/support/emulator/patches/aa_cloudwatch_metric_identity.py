"""Patch aa: GetMetricData reads exactly the metric it names.

moto 5.2.5: a MetricStat query with Dimensions matches every datum of that metric *name* whose
dimensions compare equal, in any namespace (the namespace is only checked when the query has no
dimensions); a query without dimensions matches every dimension set of the name; dimensions are
compared with a broken ordering (`Dimension.__lt__` compares a value with a name), so two or more
dimensions can fail to match their own datum.
AWS: a metric is its namespace, its name and its exact set of dimensions
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension):
`AWS/EC2 CPUUtilization AutoScalingGroupName=g` and `MyApp CPUUtilization AutoScalingGroupName=g`
are two metrics, and so are a metric with and without a dimension.
Patch: recompute every MetricStat query's values with that identity (namespace, name, the set of
(name, value) dimension pairs, the unit when given), over the periods moto uses, with moto's own
statistics. Metric math expressions are still evaluated by moto over its own series.
"""

from __future__ import annotations

from datetime import timedelta

from moto.cloudwatch.models import CloudWatchBackend, Statistics


def _dims(pairs) -> frozenset:
    return frozenset((d.name, d.value) for d in pairs)


def _series(backend, query, start, end, scan_by):
    stat = query["MetricStat"]
    metric = stat["Metric"]
    ns, name = metric["Namespace"], metric["MetricName"]
    want = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
    unit = stat.get("Unit")
    period = timedelta(seconds=int(stat["Period"]))
    data = [md for md in backend.get_all_metrics()
            if start <= md.timestamp < end and md.namespace == ns and md.name == name
            and _dims(md.dimensions) == want and (not unit or md.unit == unit)]
    values, times = [], []
    t = start
    while t <= end:
        in_period = [md for md in data if t <= md.timestamp < t + period]
        if in_period:
            s = Statistics([stat["Stat"]], t)
            s.metric_data = in_period
            values.append(s.get_statistics_for_type(stat["Stat"]))
            times.append(s.timestamp)
        t += period
    if scan_by == "TimestampDescending":
        values.reverse()
        times.reverse()
    return values, times


def apply() -> None:
    orig = CloudWatchBackend.get_metric_data

    def get_metric_data(self, queries, start_time, end_time, scan_by="TimestampAscending"):
        results = orig(self, queries, start_time, end_time, scan_by)
        start, end = start_time.replace(microsecond=0), end_time.replace(microsecond=0)
        by_id = {q["Id"]: q for q in queries if "MetricStat" in q}
        for r in results:
            q = by_id.get(r["id"])
            if q is not None:
                r["values"], r["timestamps"] = _series(self, q, start, end, scan_by)
        return results

    CloudWatchBackend.get_metric_data = get_metric_data
