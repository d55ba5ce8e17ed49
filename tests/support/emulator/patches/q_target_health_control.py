"""Control q (test-only, not a moto fix): make targets unhealthy by the image they run.

moto 5.2.5 reports every registered running instance `healthy`. Deploy tests need "the new
generation never becomes healthy". On AWS that is a failing health check; here a test tags the
AMI: `bakery-emulator:target-health=unhealthy` makes every target instance launched from that
image report `unhealthy` (reason Target.FailedHealthChecks); any other value of the tag is
reported as that state (e.g. `initial`). Nothing else changes; untagged images stay `healthy`.
Patch: wrap FakeTargetGroup.health_for.
"""

from __future__ import annotations

from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

from ._common import wrap

TAG = "bakery-emulator:target-health"


def _make(orig):
    def health_for(self, target, ec2_backend):
        status = orig(self, target, ec2_backend)
        t = self.targets.get(target["Id"])
        if t is None or status.status != "healthy" or not t["Id"].startswith("i-"):
            return status
        instance = ec2_backend.get_instance_by_id(t["Id"])
        if instance is None:
            return status
        tags = ec2_backend.describe_tags(filters={"resource-id": [instance.image_id], "key": [TAG]})
        if not tags:
            return status
        state = tags[0]["value"]
        reason = "Target.FailedHealthChecks" if state == "unhealthy" else None
        desc = "Health checks failed" if state == "unhealthy" else None
        return FakeHealthStatus(t["Id"], t["Port"], self.health_check_port, state, reason, desc)

    return health_for


def apply() -> None:
    wrap(FakeTargetGroup, "health_for", _make)
