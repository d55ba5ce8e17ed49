"""Patch b: RegisterImage applies TagSpecifications.

moto 5.2.5: RegisterImage ignores TagSpecifications; the new image has no tags.
AWS: tags with ResourceType "image" are applied to the new AMI atomically with its creation;
any other ResourceType makes the request fail (InvalidParameterValue), per the EC2 API
reference for RegisterImage (snapshots must be tagged with CreateTags or at StartSnapshot).
Patch: wrap AmisResponse.register_image: validate the specifications first, then tag the image.
"""

from __future__ import annotations

from moto.ec2.exceptions import InvalidParameterValue
from moto.ec2.responses.amis import AmisResponse

from ._common import wrap


def _make(orig):
    def register_image(self: AmisResponse):
        specs = self._get_param("TagSpecifications", []) or []
        tags: dict[str, str] = {}
        for spec in specs:
            rtype = spec.get("ResourceType")
            if rtype != "image":
                raise InvalidParameterValue(
                    f"'{rtype}' is not a valid taggable resource type for this operation.")
            for t in spec.get("Tags", []) or []:
                tags[t["Key"]] = t.get("Value", "")
        result = orig(self)
        if tags:
            self.ec2_backend.amis[result.result["ImageId"]].add_tags(tags)
        return result

    return register_image


def apply() -> None:
    wrap(AmisResponse, "register_image", _make)
