"""Patch ke: CopySnapshot and CopyImage encrypt the copies as AWS does.

moto 5.2.5: CopySnapshot keeps the source's Encrypted flag and stores KmsKeyId as given (an
alias or key id, never resolved to the key's ARN); Encrypted=true without KmsKeyId leaves an
unencrypted source's copy unencrypted; EBS encryption by default is ignored. CopyImage ignores
Encrypted and KmsKeyId altogether (patch g makes its snapshot copies).
AWS (CopySnapshot and CopyImage API reference):
- a copy is encrypted when Encrypted=true is given, when the source is encrypted (an encrypted
  snapshot never gets an unencrypted copy), or when EBS encryption by default is on in the
  destination region;
- the key is KmsKeyId (id, ARN, alias or alias ARN of a key in the destination region;
  DescribeSnapshots reports its ARN), else the source's key for a copy of an encrypted
  snapshot within its region, else the destination's default EBS key;
- KmsKeyId without Encrypted=true fails (InvalidParameterDependency);
- CopyImage applies this to every EBS snapshot of the image, and the new image's mappings say
  Encrypted=true for those.
Patch: wrap the CopySnapshot and CopyImage handlers to read and check the parameters (kept for
the request in a thread-local), and the EC2 backend's copy_snapshot (outside patch g) to set
the copy's encryption; after CopyImage the new image's mappings get each copy's Encrypted.
"""

from __future__ import annotations

from moto.ec2.exceptions import InvalidParameterDependency
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore

from ._common import wrap
from ._encryption import REQUEST, by_default, default_key_arn, key_arn, truthy


def _read_params(resp) -> None:
    encrypted = truthy(resp._get_param("Encrypted"))
    key = resp._get_param("KmsKeyId")
    if key and encrypted is not True:
        raise InvalidParameterDependency("KmsKeyId", "Encrypted")
    REQUEST.copy = (bool(encrypted), key_arn(resp.current_account, resp.region, key) if key else None)


def _make_response(orig):
    def handler(self):
        _read_params(self)
        try:
            return orig(self)
        finally:
            REQUEST.copy = None

    return handler


def _make_copy_image_response(orig):
    def copy_image(self: AmisResponse):
        _read_params(self)
        try:
            result = orig(self)
        finally:
            REQUEST.copy = None
        ami = self.ec2_backend.amis[result.result["ImageId"]]
        bdms = getattr(ami, "_bakery_bdms", None)
        if bdms:
            for m in bdms:
                sid = (m.get("Ebs") or {}).get("SnapshotId")
                snap = self.ec2_backend.snapshots.get(sid) if sid else None
                if snap is not None:
                    m["Ebs"]["Encrypted"] = bool(snap.encrypted)
        return result

    return copy_image


def _make_copy_snapshot(orig):
    def copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id):
        new = orig(self, source_snapshot_id, source_region, description, kms_key_id)
        asked, key = getattr(REQUEST, "copy", None) or (False, None)
        src = ec2_backends[self.account_id][source_region].snapshots[source_snapshot_id]
        region = self.region_name
        if asked or src.encrypted or by_default(self.account_id, region):
            if key is None:
                key = (src.kms_key_id if src.encrypted and source_region == region and src.kms_key_id
                       else default_key_arn(self.account_id, region))
            new.encrypted, new.kms_key_id = True, key
        else:
            new.encrypted, new.kms_key_id = False, None
        return new

    return copy_snapshot


def apply() -> None:
    wrap(ElasticBlockStore, "copy_snapshot", _make_response)
    wrap(AmisResponse, "copy_image", _make_copy_image_response)
    wrap(EBSBackend, "copy_snapshot", _make_copy_snapshot)
