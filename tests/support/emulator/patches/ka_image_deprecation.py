"""Patch ka: AMI deprecation (EnableImageDeprecation, DisableImageDeprecation, DeprecationTime).

moto 5.2.5: neither action is implemented (HTTP 500) and DescribeImages has no DeprecationTime.
AWS: EnableImageDeprecation(ImageId, DeprecateAt) sets the time (UTC, seconds rounded to the
nearest minute; a time in the past, or more than 10 years ahead, is InvalidParameterValue);
DescribeImages reports it as DeprecationTime (`YYYY-MM-DDTHH:MM:SS.000Z`);
DisableImageDeprecation removes it. CopyImage does not carry it (bakery sets it on every copy).
Unknown image: InvalidAMIID.NotFound.
Patch: two new handlers on AmisResponse storing `deprecation_time` on the Ami (which the
serializer reports as DeprecationTime).
"""

from __future__ import annotations

import datetime as dt

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidParameterValueError
from moto.ec2.responses.amis import AmisResponse


def _parse(value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        t = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidParameterValueError(str(value))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)


def _round_minute(t: dt.datetime) -> dt.datetime:
    t = t.replace(microsecond=0)
    if t.second >= 30:
        t += dt.timedelta(minutes=1)
    return t.replace(second=0)


def enable_image_deprecation(self: AmisResponse) -> ActionResult:
    ami_id = self._get_param("ImageId")
    at = _parse(self._get_param("DeprecateAt"))
    self.error_on_dryrun()
    ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
    now = dt.datetime.now(dt.timezone.utc)
    if at < now - dt.timedelta(minutes=1) or at > now + dt.timedelta(days=3653):
        raise InvalidParameterValueError(
            f"DeprecateAt {at:%Y-%m-%dT%H:%M:%SZ}: give a time in the future, at most 10 years ahead")
    ami.deprecation_time = f"{_round_minute(at):%Y-%m-%dT%H:%M:%S}.000Z"
    return ActionResult({"Return": True})


def disable_image_deprecation(self: AmisResponse) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
    ami.deprecation_time = None
    return ActionResult({"Return": True})


def apply() -> None:
    AmisResponse.enable_image_deprecation = enable_image_deprecation
    AmisResponse.disable_image_deprecation = disable_image_deprecation
