"""Patch o: an Auto Scaling group registers an instance with its target groups once, at launch.

moto 5.2.5: every capacity change (SetDesiredCapacity, UpdateAutoScalingGroup, a replaced
instance...) re-registers *all* of the group's instances with its target groups, even ones
deregistered on purpose and even while the AddToLoadBalancer process is suspended. A
red/black deploy disables the old group by suspending AddToLoadBalancer and deregistering its
instances; moto would put them back into service on the next capacity change.
AWS: the group registers an instance when it launches it (or when a target group is
attached: all current instances); with AddToLoadBalancer suspended it registers nothing, and
an instance deregistered by hand stays deregistered.
Patch: wrap update_attached_target_groups to register only (instance, target group) pairs
the group has not registered before, and nothing while AddToLoadBalancer is suspended
(those instances are not remembered, as on AWS they are not added when the process resumes).
"""

from __future__ import annotations

from moto.autoscaling.models import AutoScalingBackend


def update_attached_target_groups(self, group_name: str) -> None:
    group = self.autoscaling_groups[group_name]
    if not group.target_group_arns:
        return
    if "AddToLoadBalancer" in (group._suspended_processes or []):
        return
    done = group.__dict__.setdefault("_bakery_registered", set())
    ids = {state.instance.id for state in group.instance_states}
    for tg in self.elbv2_backend.describe_target_groups(
            target_group_arns=group.target_group_arns, load_balancer_arn=None, names=None):
        new = [i for i in sorted(ids) if (tg.arn, i) not in done]
        if new:
            self.elbv2_backend.register_targets(tg.arn, [{"Id": i, "Port": tg.port} for i in new])
            done.update((tg.arn, i) for i in new)


def apply() -> None:
    AutoScalingBackend.update_attached_target_groups = update_attached_target_groups
