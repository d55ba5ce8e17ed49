"""Helpers shared by the encryption patches (ka..): KMS keys and the account's EBS encryption
settings, as AWS resolves them (moto 5.2.5)."""

from __future__ import annotations

import threading
from typing import Any

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.kms import kms_backends

# Per request (the server is threaded; one request is one thread): what the response handler
# read from the request, for the backend calls it makes (CopyImage -> copy_snapshot).
REQUEST = threading.local()


class KmsKeyNotFound(EC2ClientError):
    def __init__(self, key: str):
        super().__init__("InvalidKMSKey.NotFound", f"The KMS key {key} does not exist or is not usable here.")


def key_arn(account_id: str, region: str, key: str) -> str:
    """The ARN of a KMS key named by id, ARN, alias name or alias ARN, in this region."""
    try:
        return kms_backends[account_id][region].describe_key(key).arn
    except Exception as e:  # moto raises its own NotFoundException
        raise KmsKeyNotFound(key) from e


def default_key_arn(account_id: str, region: str) -> str:
    """The account's default EBS key in `region`: the one set with ModifyEbsDefaultKmsKeyId, or
    the AWS managed key alias/aws/ebs (made on first use, as AWS does)."""
    backend = ec2_backends[account_id][region]
    return backend.default_kms_key_id or backend._create_default_encryption_key()


def by_default(account_id: str, region: str) -> bool:
    """EBS encryption by default (EnableEbsEncryptionByDefault) in `region`."""
    return bool(ec2_backends[account_id][region].ebs_encryption_by_default)


def truthy(v: Any) -> bool | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.lower() == "true"
    return bool(v)
