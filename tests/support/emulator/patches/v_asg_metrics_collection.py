"""Patch v: EnableMetricsCollection without a list enables every group metric.

moto 5.2.5: EnableMetricsCollection without `Metrics` enables nothing (and the granularity is
not kept); DisableMetricsCollection is not implemented.
AWS: "If you specify Granularity and don't specify any metrics, all metrics are enabled"
(EnableMetricsCollection API reference): the group then lists every group metric in
EnabledMetrics with the granularity given (only `1Minute` exists). DisableMetricsCollection
without a list disables all of them.
Patch: replace the EnableMetricsCollection handler (no list: every metric of the API
reference), add DisableMetricsCollection.
"""

from __future__ import annotations

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult

# The group metrics of the EnableMetricsCollection API reference.
ALL_METRICS = [
    "GroupMinSize", "GroupMaxSize", "GroupDesiredCapacity", "GroupInServiceInstances",
    "GroupPendingInstances", "GroupStandbyInstances", "GroupTerminatingInstances",
    "GroupTotalInstances", "GroupInServiceCapacity", "GroupPendingCapacity",
    "GroupStandbyCapacity", "GroupTerminatingCapacity", "GroupTotalCapacity",
    "WarmPoolDesiredCapacity", "WarmPoolWarmedCapacity", "WarmPoolPendingCapacity",
    "WarmPoolTerminatingCapacity", "WarmPoolTotalCapacity", "GroupAndWarmPoolDesiredCapacity",
    "GroupAndWarmPoolTotalCapacity",
]


def enable_metrics_collection(self):
    group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
    metrics = self._get_param("Metrics") or ALL_METRICS
    have = list(group.metrics or [])
    group.metrics = have + [m for m in metrics if m not in have]
    return EmptyResult()


def disable_metrics_collection(self):
    group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
    metrics = self._get_param("Metrics")
    group.metrics = [m for m in group.metrics if metrics and m not in metrics]
    return EmptyResult()


def apply() -> None:
    AutoScalingResponse.enable_metrics_collection = enable_metrics_collection
    AutoScalingResponse.disable_metrics_collection = disable_metrics_collection
