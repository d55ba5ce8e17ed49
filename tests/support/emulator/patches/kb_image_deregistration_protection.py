"""Patch kb: AMI deregistration protection.

moto 5.2.5: EnableImageDeregistrationProtection and DisableImageDeregistrationProtection are not
implemented (HTTP 500), DescribeImages has no DeregistrationProtection, and DeregisterImage
removes any image.
AWS: EnableImageDeregistrationProtection(ImageId, WithCooldown) protects the image
(DescribeImages: DeregistrationProtection `enabled-without-cooldown` or `enabled-with-cooldown`;
`disabled` otherwise); while it is protected DeregisterImage fails and the image stays;
DisableImageDeregistrationProtection lifts it at once, or, for a protection enabled with
cooldown, 24 hours later (`disabled-until YYYY-MM-DDTHH:MM:SS.000Z`). CopyImage does not
carry it. The error code of the refused DeregisterImage is not in the API reference: the
emulator answers OperationNotPermitted (bakery never branches on it; it reads
DeregistrationProtection).
Patch: two new handlers on AmisResponse, `deregistration_protection` on every Ami (class
default `disabled`), and DeregisterImage wrapped to refuse a protected image.
"""

from __future__ import annotations

import datetime as dt

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.amis import Ami
from moto.ec2.responses.amis import AmisResponse

from ._common import wrap
from ._encryption import truthy

COOLDOWN = dt.timedelta(hours=24)


class OperationNotPermitted(EC2ClientError):
    def __init__(self, ami_id: str, state: str):
        super().__init__("OperationNotPermitted",
                         f"The image {ami_id} has deregistration protection ({state}): "
                         "disable it before deregistering the image.")


def protected(ami: Ami) -> bool:
    state = getattr(ami, "deregistration_protection", "disabled") or "disabled"
    if state.startswith("enabled"):
        return True
    until = getattr(ami, "_bakery_protected_until", None)
    return until is not None and dt.datetime.now(dt.timezone.utc) < until


def enable(self: AmisResponse) -> ActionResult:
    ami_id = self._get_param("ImageId")
    cooldown = bool(truthy(self._get_param("WithCooldown")))
    self.error_on_dryrun()
    ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
    ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    ami._bakery_protected_until = None
    return ActionResult({"Return": "true"})


def disable(self: AmisResponse) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
    if getattr(ami, "deregistration_protection", "") == "enabled-with-cooldown":
        until = dt.datetime.now(dt.timezone.utc) + COOLDOWN
        ami._bakery_protected_until = until
        ami.deregistration_protection = f"disabled-until {until:%Y-%m-%dT%H:%M:%S}.000Z"
    else:
        ami.deregistration_protection = "disabled"
    return ActionResult({"Return": "false"})


def _make_deregister(orig):
    def deregister_image(self: AmisResponse):
        ami_id = self._get_param("ImageId")
        ami = self.ec2_backend.amis.get(ami_id)
        if ami is not None and protected(ami):
            raise OperationNotPermitted(ami_id, ami.deregistration_protection)
        return orig(self)

    return deregister_image


def apply() -> None:
    Ami.deregistration_protection = "disabled"
    AmisResponse.enable_image_deregistration_protection = enable
    AmisResponse.disable_image_deregistration_protection = disable
    wrap(AmisResponse, "deregister_image", _make_deregister)
