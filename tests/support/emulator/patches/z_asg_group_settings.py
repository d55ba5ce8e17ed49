"""Patch z: a group keeps the settings moto drops at CreateAutoScalingGroup/UpdateAutoScalingGroup.

moto 5.2.5: MaxInstanceLifetime, DefaultInstanceWarmup, InstanceMaintenancePolicy,
DesiredCapacityType and Context are accepted and forgotten: DescribeAutoScalingGroups never
returns them.
AWS: each is a property of the group, set at creation or by UpdateAutoScalingGroup and
returned by DescribeAutoScalingGroups (a clone of a group that reads them back gets them).
Patch: wrap both handlers; store the values given on moto's group object, where its response
serializer finds them.
"""

from __future__ import annotations

from moto.autoscaling.responses import AutoScalingResponse

FIELDS = {
    "MaxInstanceLifetime": "max_instance_lifetime",
    "DefaultInstanceWarmup": "default_instance_warmup",
    "InstanceMaintenancePolicy": "instance_maintenance_policy",
    "DesiredCapacityType": "desired_capacity_type",
    "Context": "context",
}


def _keep(self) -> None:
    group = self.autoscaling_backend.autoscaling_groups.get(
        self._get_param("AutoScalingGroupName"))
    if group is None:
        return
    for param, attr in FIELDS.items():
        value = self._get_param(param)
        if value is not None:
            setattr(group, attr, value)


def apply() -> None:
    for name in ("create_auto_scaling_group", "update_auto_scaling_group"):
        orig = getattr(AutoScalingResponse, name)

        def handler(self, _orig=orig):
            result = _orig(self)
            _keep(self)
            return result

        setattr(AutoScalingResponse, name, handler)
