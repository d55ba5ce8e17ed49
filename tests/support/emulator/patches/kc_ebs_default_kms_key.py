"""Patch kc: GetEbsDefaultKmsKeyId, and the AWS managed key behind it.

moto 5.2.5: GetEbsDefaultKmsKeyId is not implemented (HTTP 500); the key moto makes for
alias/aws/ebs reports KeyManager CUSTOMER.
AWS: GetEbsDefaultKmsKeyId returns the ARN of the key EBS uses when encryption is asked for
without a key (or by EBS encryption by default): the key set with ModifyEbsDefaultKmsKeyId,
else the AWS managed key alias/aws/ebs (made on first use), whose KeyManager is AWS (an AWS
managed key cannot be shared with other accounts).
Patch: a GetEbsDefaultKmsKeyId handler on the EC2 Settings responses; the backend's
_create_default_encryption_key wrapped to mark the alias/aws/ebs key KeyManager AWS.
"""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.settings import Settings
from moto.kms import kms_backends

from ._common import wrap
from ._encryption import default_key_arn


def get_ebs_default_kms_key_id(self: Settings) -> ActionResult:
    self.error_on_dryrun()
    arn = default_key_arn(self.current_account, self.region)
    return ActionResult({"KmsKeyId": arn})


def _make_create_default(orig):
    def _create_default_encryption_key(self) -> str:
        arn = orig(self)
        key = kms_backends[self.account_id][self.region_name].describe_key(arn)
        key.key_manager = "AWS"
        return arn

    return _create_default_encryption_key


def apply() -> None:
    Settings.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id
    wrap(EBSBackend, "_create_default_encryption_key", _make_create_default)
