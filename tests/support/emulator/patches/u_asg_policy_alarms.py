"""Patch u: a scaling policy's ARN and alarms are reported.

moto 5.2.5: a scaling policy has no `Alarms`: nothing says which alarms act on it; and
PutScalingPolicy answers without `PolicyARN` (moto's result says `PolicyArn`, which its
serializer does not match to the API's `PolicyARN`), so a client cannot point an alarm at the
policy it just made.
AWS: each ScalingPolicy in DescribePolicies carries `Alarms` (AlarmName, AlarmARN): the
CloudWatch alarms whose actions name the policy's ARN (for target tracking policies, the
alarms AWS made for it). A tool that copies a group's policies finds their alarms this way.
PutScalingPolicy returns the new policy's `PolicyARN` (and its `Alarms`).
Patch: give moto's FakeScalingPolicy an `alarms` property computed from the CloudWatch backend
of the same account and region: every alarm whose alarm, OK or insufficient-data actions name
the policy's ARN; and make the PutScalingPolicy handler answer `PolicyARN` and `Alarms`.
"""

from __future__ import annotations

from moto.autoscaling.models import FakeScalingPolicy
from moto.autoscaling.responses import AutoScalingResponse
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.responses import ActionResult


def _alarms(self):
    backend = self.autoscaling_backend
    try:
        cw = cloudwatch_backends[backend.account_id][backend.region_name]
    except KeyError:
        return []
    out = []
    for alarm in list(cw.alarms.values()):
        actions = list(alarm.alarm_actions or []) + list(alarm.ok_actions or []) + list(
            alarm.insufficient_data_actions or [])
        if self.arn in actions:
            out.append({"AlarmName": alarm.name, "AlarmARN": alarm.alarm_arn})
    return out


def apply() -> None:
    FakeScalingPolicy.alarms = property(_alarms)
    orig_put = AutoScalingResponse.put_scaling_policy

    def put_scaling_policy(self):
        orig_put(self)
        group = self._get_param("AutoScalingGroupName")
        name = self._get_param("PolicyName")
        policy = next(p for p in self.autoscaling_backend.policies.values()
                      if p.name == name and p.auto_scaling_group_name == group)
        return ActionResult({"PolicyARN": policy.arn, "Alarms": policy.alarms})

    AutoScalingResponse.put_scaling_policy = put_scaling_policy
