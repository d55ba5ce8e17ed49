"""The emulator patches AMI options depend on (ka..ke: deprecation, deregistration protection,
the default EBS key, encryption of EBS direct snapshots and of copies), checked against what
real AWS does. Every test_patch_* here fails on plain moto 5.2.5
(BAKERY_EMULATOR_NO_PATCHES=1).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from botocore.exceptions import ClientError

from test_patches import BS, block, error_of, image, put, register, root_mapping, snapshot


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _raises(fn, *codes: str) -> str:
    with pytest.raises(ClientError) as e:
        fn()
    code = error_of(e)[1]
    if codes:
        assert code in codes, code
    return code


def _snap(emu, region: str, sid: str) -> dict:
    return emu.client("ec2", region).describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def _key(emu, region: str, alias: str | None = None) -> str:
    kms = emu.client("kms", region)
    arn = kms.create_key(Description="bakery emulator test")["KeyMetadata"]["Arn"]
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return arn


# --- ka: deprecation ----------------------------------------------------------------------------

def test_patch_ka_image_deprecation(ec2, ebs):
    ami = register(ec2, snapshot(ebs, {0: block(b"ka")}))
    at = (_now() + dt.timedelta(days=30)).replace(second=40, microsecond=0)
    ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=at)
    want = (at + dt.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:00.000Z")  # nearest minute
    assert image(ec2, ami)["DeprecationTime"] == want
    ec2.disable_image_deprecation(ImageId=ami)
    assert "DeprecationTime" not in image(ec2, ami)
    # AWS: no time in the past, none more than 10 years ahead.
    _raises(lambda: ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=_now() - dt.timedelta(days=1)),
            "InvalidParameterValue")
    _raises(lambda: ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=_now() + dt.timedelta(days=3700)),
            "InvalidParameterValue")


# --- kb: deregistration protection --------------------------------------------------------------

def test_patch_kb_deregistration_protection(ec2, ebs):
    ami = register(ec2, snapshot(ebs, {0: block(b"kb")}))
    assert image(ec2, ami)["DeregistrationProtection"] == "disabled"
    ec2.enable_image_deregistration_protection(ImageId=ami)
    assert image(ec2, ami)["DeregistrationProtection"] == "enabled-without-cooldown"
    _raises(lambda: ec2.deregister_image(ImageId=ami))
    assert image(ec2, ami)["State"] == "available", "a protected image must stay"
    ec2.disable_image_deregistration_protection(ImageId=ami)
    ec2.deregister_image(ImageId=ami)
    # With a cooldown, disabling keeps the image protected for 24 hours.
    ami = register(ec2, snapshot(ebs, {0: block(b"kb2")}))
    ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
    assert image(ec2, ami)["DeregistrationProtection"] == "enabled-with-cooldown"
    ec2.disable_image_deregistration_protection(ImageId=ami)
    assert image(ec2, ami)["DeregistrationProtection"].startswith("disabled-until ")
    _raises(lambda: ec2.deregister_image(ImageId=ami))


# --- kc: the default EBS key --------------------------------------------------------------------

def test_patch_kc_default_kms_key(emu):
    region = "ap-northeast-1"
    ec2, kms = emu.client("ec2", region), emu.client("kms", region)
    arn = ec2.get_ebs_default_kms_key_id()["KmsKeyId"]
    meta = kms.describe_key(KeyId=arn)["KeyMetadata"]
    assert meta["KeyManager"] == "AWS", "alias/aws/ebs is an AWS managed key"
    assert kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"] == arn
    custom = _key(emu, region)
    ec2.modify_ebs_default_kms_key_id(KmsKeyId=custom)
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == custom


# --- kd: StartSnapshot encryption -----------------------------------------------------------

def test_patch_kd_start_snapshot_encryption(emu):
    region = "eu-central-1"
    ebs = emu.client("ebs", region)
    key = _key(emu, region)
    started = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
    assert started.get("KmsKeyArn") == key
    enc = started["SnapshotId"]
    put(ebs, enc, 0, block(b"kd"))
    ebs.complete_snapshot(SnapshotId=enc, ChangedBlocksCount=1)
    s = _snap(emu, region, enc)
    assert (s["Encrypted"], s.get("KmsKeyId")) == (True, key)
    # Encrypted without a key: the default EBS key.
    default = emu.client("ec2", region).get_ebs_default_kms_key_id()["KmsKeyId"]
    sid = ebs.start_snapshot(VolumeSize=1, Encrypted=True)["SnapshotId"]
    assert _snap(emu, region, sid).get("KmsKeyId") == default
    # A child of an encrypted parent is encrypted with the parent's key; naming a key fails.
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=enc)["SnapshotId"]
    s = _snap(emu, region, child)
    assert (s["Encrypted"], s.get("KmsKeyId")) == (True, key)
    _raises(lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=enc, KmsKeyArn=key),
            "ValidationException")
    _raises(lambda: ebs.start_snapshot(VolumeSize=1, KmsKeyArn=key), "ValidationException")
    # Encryption by default: no unencrypted snapshot, no child of an unencrypted parent.
    plain = snapshot(ebs, {0: block(b"plain")})
    assert _snap(emu, region, plain)["Encrypted"] is False
    ec2 = emu.client("ec2", region)
    ec2.enable_ebs_encryption_by_default()
    try:
        _raises(lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=plain),
                "ValidationException")
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        s = _snap(emu, region, sid)
        assert (s["Encrypted"], s.get("KmsKeyId")) == (True, default)
    finally:
        ec2.disable_ebs_encryption_by_default()


# --- ke: copies ---------------------------------------------------------------------------------

def test_patch_ke_copy_snapshot_encryption(emu):
    region = "eu-west-3"
    ec2, ebs = emu.client("ec2", region), emu.client("ebs", region)
    alias = f"alias/bakery-{uuid.uuid4().hex[:8]}"
    key = _key(emu, region, alias)
    plain = snapshot(ebs, {0: block(b"ke")})
    copy = ec2.copy_snapshot(SourceSnapshotId=plain, SourceRegion=region, Encrypted=True,
                             KmsKeyId=alias)["SnapshotId"]
    s = _snap(emu, region, copy)
    assert (s["Encrypted"], s.get("KmsKeyId")) == (True, key), "the key is reported by its ARN"
    again = ec2.copy_snapshot(SourceSnapshotId=copy, SourceRegion=region)["SnapshotId"]
    assert _snap(emu, region, again)["Encrypted"] is True, "a copy of an encrypted snapshot is encrypted"
    _raises(lambda: ec2.copy_snapshot(SourceSnapshotId=plain, SourceRegion=region, KmsKeyId=key),
            "InvalidParameterDependency")
    default = ec2.get_ebs_default_kms_key_id()["KmsKeyId"]
    copy = ec2.copy_snapshot(SourceSnapshotId=plain, SourceRegion=region, Encrypted=True)["SnapshotId"]
    assert _snap(emu, region, copy).get("KmsKeyId") == default


def test_patch_ke_copy_image_encryption(emu, ec2, ebs):
    ami = register(ec2, snapshot(ebs, {0: block(b"ke-img")}))
    dest = "sa-east-1"
    key = _key(emu, dest)
    west = emu.client("ec2", dest)
    copied = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name=f"ke-{uuid.uuid4().hex[:8]}",
                             Encrypted=True, KmsKeyId=key)["ImageId"]
    root = root_mapping(image(west, copied))["Ebs"]
    assert root["Encrypted"] is True
    s = _snap(emu, dest, root["SnapshotId"])
    assert (s["Encrypted"], s.get("KmsKeyId")) == (True, key)
    plain = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name=f"ke-{uuid.uuid4().hex[:8]}")["ImageId"]
    assert root_mapping(image(west, plain))["Ebs"]["Encrypted"] is False
    _raises(lambda: west.copy_image(SourceImageId=ami, SourceRegion="us-east-1",
                                    Name=f"ke-{uuid.uuid4().hex[:8]}", KmsKeyId=key),
            "InvalidParameterDependency")
