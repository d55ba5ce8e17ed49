"""Patch h: CopyImage honours CopyImageTags (and TagSpecifications).

moto 5.2.5: CopyImage reads only SourceImageId, SourceRegion, Name and Description: the copy
never has tags.
AWS: with CopyImageTags=true the source AMI's user-defined tags (not "aws:" ones) are copied
to the new AMI; TagSpecifications tag the new AMI (ResourceType image) and/or all the new
snapshots (ResourceType snapshot), any other ResourceType fails the request.
Patch: wrap AmisResponse.copy_image and tag the result.
"""

from __future__ import annotations

from moto.ec2.exceptions import InvalidParameterValue
from moto.ec2.models import ec2_backends
from moto.ec2.responses.amis import AmisResponse

from ._common import truthy, wrap


def _make(orig):
    def copy_image(self: AmisResponse):
        specs = self._get_param("TagSpecifications", []) or []
        by_type: dict[str, dict[str, str]] = {}
        for spec in specs:
            rtype = spec.get("ResourceType")
            if rtype not in ("image", "snapshot"):
                raise InvalidParameterValue(
                    f"'{rtype}' is not a valid taggable resource type for this operation.")
            for t in spec.get("Tags", []) or []:
                by_type.setdefault(rtype, {})[t["Key"]] = t.get("Value", "")
        result = orig(self)
        ami = self.ec2_backend.amis[result.result["ImageId"]]
        if truthy(self._get_param("CopyImageTags", False)):
            src_region = self._get_param("SourceRegion")
            src = ec2_backends[self.current_account][src_region].amis[
                self._get_param("SourceImageId")]
            ami.add_tags({t["key"]: t["value"] for t in src.get_tags()  # moto's own spelling
                          if not t["key"].startswith("aws:")})
        if "image" in by_type:
            ami.add_tags(by_type["image"])
        if "snapshot" in by_type:
            for m in ami.block_device_mappings:
                sid = (m.get("Ebs") or {}).get("SnapshotId")
                if sid in self.ec2_backend.snapshots:
                    self.ec2_backend.snapshots[sid].add_tags(by_type["snapshot"])
        return result

    return copy_image


def apply() -> None:
    wrap(AmisResponse, "copy_image", _make)
