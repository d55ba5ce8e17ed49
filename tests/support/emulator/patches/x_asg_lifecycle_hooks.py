"""Patch x: lifecycle hooks given at group creation exist, and a hook keeps what it was given.

moto 5.2.5: CreateAutoScalingGroup ignores LifecycleHookSpecificationList (the group has no
hooks, so its first instances would launch ungated); PutLifecycleHook drops
NotificationTargetARN, RoleARN and NotificationMetadata, and DescribeLifecycleHooks answers
made-up ARNs (`arn:aws:iam::1234567890:role/my-auto-scaling-role`, an SQS `my-queue`) for every
hook.
AWS: the hooks of LifecycleHookSpecificationList are in place before the group launches its
first instance (the documented way to gate the first launches, spinnaker/spinnaker#5001);
a hook reports the notification target, role and metadata it was given, and none it was not.
Patch: wrap the CreateAutoScalingGroup handler (create each listed hook with moto's own
create_lifecycle_hook) and the PutLifecycleHook handler (keep the three fields as given).
"""

from __future__ import annotations

from moto.autoscaling.responses import AutoScalingResponse


def _keep(hook, spec) -> None:
    hook.notification_target_arn = spec.get("NotificationTargetARN")
    hook.role_arn = spec.get("RoleARN")
    hook.notification_metadata = spec.get("NotificationMetadata")


def apply() -> None:
    orig_create = AutoScalingResponse.create_auto_scaling_group
    orig_put = AutoScalingResponse.put_lifecycle_hook

    def create_auto_scaling_group(self):
        result = orig_create(self)
        group = self._get_param("AutoScalingGroupName")
        for spec in self._get_param("LifecycleHookSpecificationList", []) or []:
            hook = self.autoscaling_backend.create_lifecycle_hook(
                name=spec.get("LifecycleHookName"),
                as_name=group,
                transition=spec.get("LifecycleTransition"),
                timeout=spec.get("HeartbeatTimeout"),
                result=spec.get("DefaultResult"),
            )
            _keep(hook, spec)
        return result

    def put_lifecycle_hook(self):
        result = orig_put(self)
        key = f"{self._get_param('AutoScalingGroupName')}_{self._get_param('LifecycleHookName')}"
        hook = self.autoscaling_backend.lifecycle_hooks.get(key)
        if hook is not None:
            _keep(hook, {k: self._get_param(k) for k in
                         ("NotificationTargetARN", "RoleARN", "NotificationMetadata")})
        return result

    AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingResponse.put_lifecycle_hook = put_lifecycle_hook
