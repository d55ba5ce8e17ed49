"""Patch j: a launch template version made by CreateLaunchTemplateVersion with UserData works.

moto 5.2.5: CreateLaunchTemplate decodes UserData into moto's Base64EncodedString, but
CreateLaunchTemplateVersion stores the raw string; LaunchTemplateVersion.user_data asserts
the type, so an ASG (CreateAutoScalingGroup, UpdateAutoScalingGroup, SetDesiredCapacity...)
launching from that version fails with HTTP 500 (AssertionError in user_data).
AWS: the version's UserData is the base64 text given (invalid base64 is rejected with
InvalidUserData.Malformed) and instances launch from it normally.
Patch: wrap LaunchTemplateVersion.__init__ to pass a str UserData through moto's own
parse_user_data, as CreateLaunchTemplate does.
"""

from __future__ import annotations

from moto.core.types import Base64EncodedString
from moto.ec2.models.launch_templates import LaunchTemplateVersion
from moto.ec2.utils import parse_user_data

from ._common import wrap


def _make(orig):
    def __init__(self, template, number, data, description):
        ud = (data or {}).get("UserData")
        if ud is not None and not isinstance(ud, Base64EncodedString):
            data = dict(data)
            data["UserData"] = parse_user_data(ud)
        orig(self, template, number, data, description)

    return __init__


def apply() -> None:
    wrap(LaunchTemplateVersion, "__init__", _make)
