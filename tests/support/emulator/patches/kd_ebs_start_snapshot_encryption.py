"""Patch kd: StartSnapshot encrypts as AWS does (Encrypted, KmsKeyArn, ParentSnapshotId and
EBS encryption by default).

moto 5.2.5: Encrypted and KmsKeyArn are ignored: every snapshot made with the EBS direct APIs
is unencrypted, and nothing depends on the parent or on encryption by default.
AWS (EBS User Guide, "Encryption outcomes for EBS direct APIs"):
- unencrypted parent: with Encrypted or KmsKeyArn given, or with encryption by default on, the
  request fails (ValidationException); otherwise the child is unencrypted;
- encrypted parent: the child is encrypted with the parent's KMS key; Encrypted or KmsKeyArn
  given fails (ValidationException);
- no parent: Encrypted=true encrypts with KmsKeyArn, or with the account's default EBS key
  when KmsKeyArn is omitted; with Encrypted omitted (or false) the snapshot is encrypted with
  the default key when encryption by default is on, else unencrypted; KmsKeyArn without
  Encrypted fails (ValidationException).
The response carries KmsKeyArn for an encrypted snapshot; DescribeSnapshots reports Encrypted
and KmsKeyId (the key's ARN). An unknown key fails the request.
Patch: wrap EBSResponse.start_snapshot (outside patch d): check the rules before the
snapshot is made, then mark the EC2 snapshot encrypted with the key the rules name.
"""

from __future__ import annotations

from moto.ebs.responses import EBSResponse
from moto.ec2.models import ec2_backends

from ._common import EbsValidationException, wrap
from ._encryption import by_default, default_key_arn, key_arn, truthy


def _invalid(msg: str) -> EbsValidationException:
    return EbsValidationException(msg, "INVALID_PARAMETER_VALUE")


def outcome(account: str, region: str, parent_id, encrypted, kms_key):
    """(encrypted, key ARN) of the new snapshot, or raise as AWS does."""
    ec2 = ec2_backends[account][region]
    if parent_id:
        parent = ec2.snapshots.get(parent_id)
        if encrypted is not None or kms_key:
            raise _invalid("Encrypted and KmsKeyArn cannot be given with ParentSnapshotId.")
        if parent is not None and parent.encrypted:
            return True, parent.kms_key_id
        if by_default(account, region):
            raise _invalid("EBS encryption by default is enabled: a snapshot cannot start from "
                           "the unencrypted parent snapshot; encrypt the parent first (CopySnapshot).")
        return False, None
    if kms_key and encrypted is not True:
        raise _invalid("KmsKeyArn requires Encrypted=true.")
    if encrypted is True:
        return True, key_arn(account, region, kms_key) if kms_key else default_key_arn(account, region)
    if by_default(account, region):
        return True, default_key_arn(account, region)
    return False, None


def _make(orig):
    def start_snapshot(self: EBSResponse):
        enc, key = outcome(self.current_account, self.region, self._get_param("ParentSnapshotId"),
                           truthy(self._get_param("Encrypted")), self._get_param("KmsKeyArn"))
        result = orig(self)
        if enc:
            snap = ec2_backends[self.current_account][self.region].snapshots[result.result["SnapshotId"]]
            snap.encrypted = True
            snap.kms_key_id = key
            result.result["KmsKeyArn"] = key
        return result

    return start_snapshot


def apply() -> None:
    wrap(EBSResponse, "start_snapshot", _make)
