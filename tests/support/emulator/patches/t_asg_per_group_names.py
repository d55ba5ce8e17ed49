"""Patch t: scaling policy and scheduled action names are per group, and go with their group.

moto 5.2.5: keeps a region's scaling policies, and its scheduled actions, in one dict keyed by
name alone: putting policy `scale-out` on a second group replaces the first group's (the
first group loses its policy, and its alarms' actions point at a policy that no longer
exists); DeletePolicy/ExecutePolicy ignore the group; DeleteAutoScalingGroup leaves the
group's policies, scheduled actions and lifecycle hooks behind (a new group of the same name
inherits them).
AWS: a policy or scheduled action name is unique within its group (two groups may each have
`scale-out`); DeletePolicy and ExecutePolicy take the group; deleting a group deletes its
scaling policies, scheduled actions and lifecycle hooks.
Patch: key both dicts by (group, name) in the put paths and the delete/execute paths, and drop
a group's policies, scheduled actions and hooks when the group is deleted.
"""

from __future__ import annotations

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult


def _policy_key(self, group, name):
    """The key of policy `name` (a name or an ARN) of `group`."""
    for key, p in self.policies.items():
        if (p.name == name or p.arn == name) and (not group or p.auto_scaling_group_name == group):
            return key
    return None


def apply() -> None:
    orig_put_policy = AutoScalingBackend.put_scaling_policy
    orig_put_action = AutoScalingBackend.put_scheduled_update_group_action
    orig_delete_group = AutoScalingBackend.delete_auto_scaling_group

    def put_scaling_policy(self, name, *args, **kwargs):
        before = self.policies.get(name)
        policy = orig_put_policy(self, name, *args, **kwargs)
        # moto stored it under the bare name (replacing another group's): move it.
        if self.policies.get(name) is policy:
            del self.policies[name]
            if before is not None and before is not policy:
                self.policies[(before.auto_scaling_group_name, before.name)] = before
        self.policies[(policy.auto_scaling_group_name, policy.name)] = policy
        return policy

    def put_scheduled_update_group_action(self, name, *args, **kwargs):
        action_name = kwargs.get("scheduled_action_name")
        before = self.scheduled_actions.get(action_name)
        action = orig_put_action(self, name, *args, **kwargs)
        if self.scheduled_actions.get(action_name) is action:
            del self.scheduled_actions[action_name]
            if before is not None and before is not action:
                self.scheduled_actions[(before.auto_scaling_group_name, action_name)] = before
        self.scheduled_actions[(name, action_name)] = action
        return action

    def delete_scheduled_action(self, auto_scaling_group_name, scheduled_action_name):
        key = (auto_scaling_group_name, scheduled_action_name)
        if self.scheduled_actions.pop(key, None) is None:
            raise ValidationError("Scheduled action name not found")

    def delete_auto_scaling_group(self, group_name):
        orig_delete_group(self, group_name)
        for d in (self.policies, self.scheduled_actions):
            for key in [k for k, v in d.items() if v.auto_scaling_group_name == group_name]:
                del d[key]
        for key in [k for k, h in self.lifecycle_hooks.items()
                    if h.auto_scaling_group_name == group_name]:
            del self.lifecycle_hooks[key]

    def delete_policy(self):  # AutoScalingResponse
        backend = self.autoscaling_backend
        key = _policy_key(backend, self._get_param("AutoScalingGroupName"),
                          self._get_param("PolicyName"))
        if key is not None:
            del backend.policies[key]
        return EmptyResult()

    def execute_policy(self):  # AutoScalingResponse
        backend = self.autoscaling_backend
        key = _policy_key(backend, self._get_param("AutoScalingGroupName"),
                          self._get_param("PolicyName"))
        if key is None:
            raise ValidationError("Policy not found")
        backend.policies[key].execute()
        return EmptyResult()

    AutoScalingBackend.put_scaling_policy = put_scaling_policy
    AutoScalingBackend.put_scheduled_update_group_action = put_scheduled_update_group_action
    AutoScalingBackend.delete_scheduled_action = delete_scheduled_action
    AutoScalingBackend.delete_auto_scaling_group = delete_auto_scaling_group
    AutoScalingResponse.delete_policy = delete_policy
    AutoScalingResponse.execute_policy = execute_policy
