"""Patch r: a group attached to a Classic Load Balancer registers its own instances, once, and
never touches another group's.

moto 5.2.5: on every capacity change of a group attached to a Classic Load Balancer, moto makes
the balancer hold exactly that group's InService instances: it deregisters every other
instance, another group's included (so a red/black deploy that never takes the old
generation out of the balancer looks right: both generations would take traffic on AWS); it
registers even while AddToLoadBalancer is suspended, and puts back instances deregistered by
hand; and DeregisterInstancesFromLoadBalancer leaves an instance the group registered in place.
AWS: a group registers an instance with its Classic Load Balancers when it launches it (none
while AddToLoadBalancer is suspended) and deregisters it when it leaves the group; instances
registered by anyone else (another group) stay; DeregisterInstancesFromLoadBalancer takes an
instance out whoever registered it, and the group does not put it back.
Patch: replace update_attached_elbs (register the group's new InService instances once,
deregister the ones that left the group, nothing else) and make an explicit deregistration
remove the instance from both of moto's lists; registering twice keeps one entry.
"""

from __future__ import annotations

from moto.autoscaling.models import AutoScalingBackend
from moto.elb.exceptions import LoadBalancerNotFoundError
from moto.elb.models import ELBBackend

_orig_register = ELBBackend.register_instances
_orig_deregister = ELBBackend.deregister_instances


def update_attached_elbs(self, group_name: str) -> None:
    group = self.autoscaling_groups[group_name]
    if not group.load_balancer_names:
        return
    try:
        elbs = self.elb_backend.describe_load_balancers(names=group.load_balancer_names)
    except LoadBalancerNotFoundError:
        return  # balancers can be deleted before their group
    done = group.__dict__.setdefault("_bakery_elb_registered", set())
    members = {s.instance.id for s in group.instance_states}
    active = {s.instance.id for s in group.active_instances()}
    suspended = "AddToLoadBalancer" in (group._suspended_processes or [])
    for elb in elbs:
        gone = sorted(i for (lb, i) in done if lb == elb.name and i not in members)
        if gone:
            self.elb_backend.deregister_instances(elb.name, gone, from_autoscaling=True)
            done.difference_update((elb.name, i) for i in gone)
        if suspended:
            continue
        new = sorted(i for i in active if (elb.name, i) not in done)
        if new:
            self.elb_backend.register_instances(elb.name, new, from_autoscaling=True)
            done.update((elb.name, i) for i in new)


def register_instances(self, load_balancer_name, instance_ids, from_autoscaling=False):
    lb = self.get_load_balancer(load_balancer_name)
    have = set(lb.instance_ids) if lb is not None else set()
    fresh = [i for i in instance_ids if i not in have]
    return _orig_register(self, load_balancer_name, fresh, from_autoscaling=from_autoscaling)


def deregister_instances(self, load_balancer_name, instance_ids, from_autoscaling=False):
    ids = list(instance_ids)
    lb = _orig_deregister(self, load_balancer_name, ids, from_autoscaling=from_autoscaling)
    if not from_autoscaling:
        lb.instance_autoscaling_ids = [i for i in lb.instance_autoscaling_ids if i not in ids]
    return lb


def apply() -> None:
    AutoScalingBackend.update_attached_elbs = update_attached_elbs
    ELBBackend.register_instances = register_instances
    ELBBackend.deregister_instances = deregister_instances
