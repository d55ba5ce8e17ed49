"""Patch y: Auto Scaling notification configurations.

moto 5.2.5: PutNotificationConfiguration, DescribeNotificationConfigurations and
DeleteNotificationConfiguration are not implemented (HTTP 500, which SDKs retry).
AWS: a group sends the listed notification types (`autoscaling:EC2_INSTANCE_LAUNCH`, ...) to an
SNS topic; Put replaces the types for that (group, topic); Describe lists one entry per
(group, topic, type), for the groups asked (all when none); the configurations go with
their group.
Patch: the three handlers, over a dict on the backend keyed by (group, topic); deleting a
group drops its configurations.
"""

from __future__ import annotations

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult


def _store(backend) -> dict:
    return backend.__dict__.setdefault("_bakery_notifications", {})


def put_notification_configuration(self):
    backend = self.autoscaling_backend
    group = self._get_param("AutoScalingGroupName")
    if group not in backend.autoscaling_groups:
        raise ValidationError(f"AutoScalingGroup name not found - {group}")
    topic = self._get_param("TopicARN")
    types = self._get_param("NotificationTypes", []) or []
    _store(backend)[(group, topic)] = list(dict.fromkeys(types))
    return EmptyResult()


def describe_notification_configurations(self):
    backend = self.autoscaling_backend
    groups = self._get_param("AutoScalingGroupNames", []) or []
    out = []
    for (group, topic), types in sorted(_store(backend).items()):
        if groups and group not in groups:
            continue
        for t in types:
            out.append({"AutoScalingGroupName": group, "TopicARN": topic, "NotificationType": t})
    return ActionResult({"NotificationConfigurations": out, "NextToken": None})


def delete_notification_configuration(self):
    key = (self._get_param("AutoScalingGroupName"), self._get_param("TopicARN"))
    _store(self.autoscaling_backend).pop(key, None)
    return EmptyResult()


def apply() -> None:
    orig_delete = AutoScalingBackend.delete_auto_scaling_group

    def delete_auto_scaling_group(self, group_name):
        orig_delete(self, group_name)
        store = _store(self)
        for key in [k for k in store if k[0] == group_name]:
            del store[key]

    AutoScalingBackend.delete_auto_scaling_group = delete_auto_scaling_group
    AutoScalingResponse.put_notification_configuration = put_notification_configuration
    AutoScalingResponse.describe_notification_configurations = describe_notification_configurations
    AutoScalingResponse.delete_notification_configuration = delete_notification_configuration
