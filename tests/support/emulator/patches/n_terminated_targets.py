"""Patch n: a terminated instance leaves every target group it was registered in.

moto 5.2.5: TerminateInstances (and an Auto Scaling group replacing or scaling in an instance)
leaves the instance registered: DescribeTargetHealth keeps listing it as `healthy`, so a
deploy that waits for "every target healthy" or counts targets sees ghosts.
AWS: "If you terminate an instance, it is deregistered automatically": it drains and then
disappears from DescribeTargetHealth (asked for by id, it reports `draining`/`unused`).
Patch: wrap the EC2 backend's terminate_instances to move the terminated ids of every target
group of that account and region to moto's own `terminated_targets` (reported `draining`).
"""

from __future__ import annotations

from moto.ec2.models.instances import InstanceBackend
from moto.elbv2.models import elbv2_backends

from ._common import wrap


def _make(orig):
    def terminate_instances(self, instance_ids):
        result = orig(self, instance_ids)
        gone = [instance.id for instance, _ in result]
        backend = elbv2_backends[self.account_id][self.region_name]
        for tg in backend.target_groups.values():
            tg.deregister_terminated_instances(gone)
        return result

    return terminate_instances


def apply() -> None:
    wrap(InstanceBackend, "terminate_instances", _make)
