"""Each patch of the emulator, checked against what real AWS does.

Every test named test_patch_* fails on plain moto 5.2.5 (run the suite with
BAKERY_EMULATOR_NO_PATCHES=1 to see it); the last tests check the launcher itself.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import Emulator

BS = 524288


def block(fill: bytes) -> bytes:
    return (fill * (BS // len(fill) + 1))[:BS]


def put(ebs, snap_id: str, index: int, data: bytes) -> None:
    ebs.put_snapshot_block(
        SnapshotId=snap_id, BlockIndex=index, BlockData=data, DataLength=len(data),
        Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        ChecksumAlgorithm="SHA256",
    )


def snapshot(ebs, blocks: dict[int, bytes], size_gib: int = 1, parent: str | None = None,
             tags: list | None = None) -> str:
    kw = {"VolumeSize": size_gib, "Description": "bakery emulator test"}
    if parent:
        kw["ParentSnapshotId"] = parent
    if tags:
        kw["Tags"] = tags
    sid = ebs.start_snapshot(**kw)["SnapshotId"]
    for i, data in blocks.items():
        put(ebs, sid, i, data)
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks))
    return sid


def list_blocks(ebs, sid: str, **kw) -> list[dict]:
    out, token = [], None
    while True:
        args = dict(SnapshotId=sid, **kw)
        if token:
            args["NextToken"] = token
        page = ebs.list_snapshot_blocks(**args)
        out += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            return out


def read(ebs, sid: str, index: int, token: str) -> bytes:
    return ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=index,
                                  BlockToken=token)["BlockData"].read()


def register(ec2, root_snap: str, **extra) -> str:
    kw = dict(
        Name=f"bakery-test-{uuid.uuid4().hex[:10]}", Architecture="x86_64",
        RootDeviceName="/dev/xvda", VirtualizationType="hvm", EnaSupport=True,
        BootMode="legacy-bios",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {
            "SnapshotId": root_snap, "VolumeSize": 8, "VolumeType": "gp3",
            "DeleteOnTermination": True}}],
    )
    kw.update(extra)
    return ec2.register_image(**kw)["ImageId"]


def image(ec2, ami: str) -> dict:
    return ec2.describe_images(ImageIds=[ami])["Images"][0]


def root_mapping(img: dict) -> dict:
    return next(m for m in img["BlockDeviceMappings"] if m["DeviceName"] == img["RootDeviceName"])


def error_of(exc: pytest.ExceptionInfo) -> tuple[int, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


# --- a: RegisterImage block device mappings ---------------------------------------------------

def test_patch_a_register_image_uses_given_mappings(ec2, ebs):
    root = snapshot(ebs, {0: block(b"root")})
    data = snapshot(ebs, {3: block(b"data")}, size_gib=2)
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    ami = register(ec2, root, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root, "VolumeSize": 8,
                                             "VolumeType": "gp3", "DeleteOnTermination": False}},
        {"DeviceName": "/dev/sdb", "Ebs": {"SnapshotId": data}},
        {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral0"},
    ])
    img = image(ec2, ami)
    assert img["RootDeviceName"] == "/dev/xvda"
    assert img["RootDeviceType"] == "ebs"
    assert img["Architecture"] == "x86_64"
    assert img["VirtualizationType"] == "hvm"
    assert img["EnaSupport"] is True
    assert img["BootMode"] == "legacy-bios"
    r = root_mapping(img)["Ebs"]
    assert (r["SnapshotId"], r["VolumeSize"], r["VolumeType"], r["DeleteOnTermination"]) == \
        (root, 8, "gp3", False)
    by_dev = {m["DeviceName"]: m for m in img["BlockDeviceMappings"]}
    assert by_dev["/dev/sdb"]["Ebs"]["SnapshotId"] == data
    assert by_dev["/dev/sdb"]["Ebs"]["VolumeSize"] == 2  # defaults to the snapshot's size
    assert by_dev["/dev/sdc"]["VirtualName"] == "ephemeral0"
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert after == before, "RegisterImage must not invent snapshots"
    # AWS refuses to delete a snapshot a registered AMI uses.
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=root)
    assert error_of(e)[1] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=ami)
    ec2.delete_snapshot(SnapshotId=root)


def test_patch_a_register_image_unknown_snapshot_fails(ec2):
    with pytest.raises(ClientError) as e:
        register(ec2, "snap-0123456789abcdef0")
    assert error_of(e) == (400, "InvalidSnapshot.NotFound")


# --- b: RegisterImage TagSpecifications --------------------------------------------------------

def test_patch_b_register_image_tag_specifications(ec2, ebs):
    root = snapshot(ebs, {0: block(b"x")})
    ami = register(ec2, root, TagSpecifications=[{"ResourceType": "image", "Tags": [
        {"Key": "appversion", "Value": "app-1.0-1"}, {"Key": "bakery:bake-id", "Value": "b1"}]}])
    tags = {t["Key"]: t["Value"] for t in image(ec2, ami).get("Tags", [])}
    assert tags == {"appversion": "app-1.0-1", "bakery:bake-id": "b1"}
    # AWS: RegisterImage takes only ResourceType=image; anything else fails the request.
    with pytest.raises(ClientError) as e:
        register(ec2, root, TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}])
    assert error_of(e)[0] == 400


# --- c: BlockSize ---------------------------------------------------------------------------

def test_patch_c_block_size_is_512k(ebs):
    started = ebs.start_snapshot(VolumeSize=1)
    assert started["BlockSize"] == BS
    put(ebs, started["SnapshotId"], 0, block(b"c"))
    ebs.complete_snapshot(SnapshotId=started["SnapshotId"], ChangedBlocksCount=1)
    listed = ebs.list_snapshot_blocks(SnapshotId=started["SnapshotId"])
    assert listed["BlockSize"] == BS
    assert listed["VolumeSize"] == 1


# --- d: ParentSnapshotId ------------------------------------------------------------------------

def test_patch_d_child_inherits_parent_blocks(ebs):
    parent = snapshot(ebs, {0: block(b"p0"), 1: block(b"p1"), 2: block(b"p2")})
    started = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)
    assert started["ParentSnapshotId"] == parent
    child = started["SnapshotId"]
    put(ebs, child, 1, block(b"c1"))
    put(ebs, child, 4, block(b"c4"))
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    blocks = {b["BlockIndex"]: b["BlockToken"] for b in list_blocks(ebs, child)}
    assert sorted(blocks) == [0, 1, 2, 4]
    assert read(ebs, child, 0, blocks[0]) == block(b"p0")
    assert read(ebs, child, 1, blocks[1]) == block(b"c1")
    assert read(ebs, child, 2, blocks[2]) == block(b"p2")
    # the parent is unchanged
    pblocks = {b["BlockIndex"]: b["BlockToken"] for b in list_blocks(ebs, parent)}
    assert sorted(pblocks) == [0, 1, 2]
    assert read(ebs, parent, 1, pblocks[1]) == block(b"p1")


def test_patch_d_unknown_parent_is_not_found(ebs):
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId="snap-0123456789abcdef0")
    assert error_of(e) == (404, "ResourceNotFoundException")


# --- e: GetSnapshotBlock / ListSnapshotBlocks -------------------------------------------------

def test_patch_e_unwritten_block_is_validation_error(ebs):
    sid = snapshot(ebs, {0: block(b"e")})
    token = list_blocks(ebs, sid)[0]["BlockToken"]
    with pytest.raises(ClientError) as e:
        read(ebs, sid, 7, token)
    assert error_of(e) == (400, "ValidationException")
    assert e.value.response.get("Reason") in ("INVALID_BLOCK_TOKEN", "INVALID_BLOCK")


def test_patch_e_list_snapshot_blocks_sorted_and_paginated(ebs):
    order = [100, 3, 57, 0, 99, 12] + [i for i in range(101) if i not in (100, 3, 57, 0, 99, 12)]
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = block(b"z")
    for i in order:
        put(ebs, sid, i, data)
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(order))
    first = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)
    assert [b["BlockIndex"] for b in first["Blocks"]] == list(range(100))
    assert first.get("NextToken")
    assert (first["BlockSize"], first["VolumeSize"]) == (BS, 1)
    second = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100,
                                      NextToken=first["NextToken"])
    assert [b["BlockIndex"] for b in second["Blocks"]] == [100]
    assert not second.get("NextToken")
    tail = ebs.list_snapshot_blocks(SnapshotId=sid, StartingBlockIndex=98)
    assert [b["BlockIndex"] for b in tail["Blocks"]] == [98, 99, 100]


# --- f: ListChangedBlocks -------------------------------------------------------------------

def test_patch_f_list_changed_blocks(ebs):
    parent = snapshot(ebs, {0: block(b"a"), 1: block(b"b"), 2: block(b"c")})
    child = snapshot(ebs, {1: block(b"B"), 5: block(b"F")}, parent=parent)
    changed = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
    assert [c["BlockIndex"] for c in changed["ChangedBlocks"]] == [1, 5]
    c1, c5 = changed["ChangedBlocks"]
    assert c1.get("FirstBlockToken") and c1.get("SecondBlockToken")
    assert c5.get("SecondBlockToken") and not c5.get("FirstBlockToken")
    assert read(ebs, child, 5, c5["SecondBlockToken"]) == block(b"F")
    assert changed["BlockSize"] == BS
    everything = ebs.list_changed_blocks(SecondSnapshotId=child)
    assert [c["BlockIndex"] for c in everything["ChangedBlocks"]] == [0, 1, 2, 5]


# --- g: region copies carry block data ------------------------------------------------------

def test_patch_g_copy_image_copies_blocks(emu, ec2, ebs):
    root = snapshot(ebs, {0: block(b"g0"), 9: block(b"g9")}, size_gib=2)
    ami = register(ec2, root)
    west_ec2, west_ebs = emu.client("ec2", "us-west-2"), emu.client("ebs", "us-west-2")
    copied = west_ec2.copy_image(SourceImageId=ami, SourceRegion="us-east-1",
                                 Name=f"copy-{uuid.uuid4().hex[:8]}")["ImageId"]
    img = image(west_ec2, copied)
    assert img["RootDeviceName"] == "/dev/xvda"
    wroot = root_mapping(img)["Ebs"]
    assert wroot["SnapshotId"] != root
    west_snaps = {s["SnapshotId"]: s for s in
                  west_ec2.describe_snapshots(SnapshotIds=[wroot["SnapshotId"]])["Snapshots"]}
    assert west_snaps[wroot["SnapshotId"]]["VolumeSize"] == 2
    blocks = {b["BlockIndex"]: b["BlockToken"] for b in list_blocks(west_ebs, wroot["SnapshotId"])}
    assert sorted(blocks) == [0, 9]
    assert read(west_ebs, wroot["SnapshotId"], 9, blocks[9]) == block(b"g9")


def test_patch_g_copy_snapshot_copies_blocks(emu, ebs):
    sid = snapshot(ebs, {2: block(b"cs")})
    west_ec2, west_ebs = emu.client("ec2", "eu-west-1"), emu.client("ebs", "eu-west-1")
    new = west_ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")["SnapshotId"]
    blocks = list_blocks(west_ebs, new)
    assert [b["BlockIndex"] for b in blocks] == [2]
    assert read(west_ebs, new, 2, blocks[0]["BlockToken"]) == block(b"cs")


# --- h: CopyImageTags ------------------------------------------------------------------------

def test_patch_h_copy_image_tags(emu, ec2, ebs):
    root = snapshot(ebs, {0: block(b"h")})
    ami = register(ec2, root, TagSpecifications=[{"ResourceType": "image", "Tags": [
        {"Key": "appversion", "Value": "app-2.0-1"}]}])
    west = emu.client("ec2", "us-west-2")
    copied = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="h-copy",
                             CopyImageTags=True)["ImageId"]
    tags = {t["Key"]: t["Value"] for t in image(west, copied).get("Tags", [])}
    assert tags.get("appversion") == "app-2.0-1"
    plain = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="h-copy2")["ImageId"]
    assert not image(west, plain).get("Tags")


# --- i/j/k: launch templates -------------------------------------------------------------------

def _lt(ec2, **data) -> str:
    name = f"bakery-lt-{uuid.uuid4().hex[:8]}"
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)
    return name


def _version(ec2, name: str, v: str) -> dict:
    return ec2.describe_launch_template_versions(
        LaunchTemplateName=name, Versions=[v])["LaunchTemplateVersions"][0]


def test_patch_i_source_version_is_inherited(ec2):
    ud = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    name = _lt(ec2, ImageId="ami-11111111", InstanceType="t3.micro", UserData=ud,
               KeyName="ops")
    ec2.create_launch_template_version(LaunchTemplateName=name, SourceVersion="1",
                                       LaunchTemplateData={"ImageId": "ami-22222222"})
    data = _version(ec2, name, "2")["LaunchTemplateData"]
    assert data["ImageId"] == "ami-22222222"
    assert data.get("InstanceType") == "t3.micro"
    assert data.get("KeyName") == "ops"
    assert data.get("UserData") == ud


def test_patch_j_asg_launches_from_version_with_user_data(emu, ec2):
    name = _lt(ec2, ImageId="ami-11111111", InstanceType="t3.micro")
    ud = base64.b64encode(b"#!/bin/sh\necho v2\n").decode()
    ec2.create_launch_template_version(
        LaunchTemplateName=name, LaunchTemplateData={
            "ImageId": "ami-22222222", "InstanceType": "t3.micro", "UserData": ud})
    asg = emu.client("autoscaling")
    group = f"app-test-v{uuid.uuid4().int % 1000:03d}"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group, MinSize=1, MaxSize=2, DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"})
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    assert len(groups["AutoScalingGroups"][0]["Instances"]) == 1
    asg.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)


def test_patch_k_delete_launch_template_versions(ec2):
    name = _lt(ec2, ImageId="ami-11111111")
    for img in ("ami-22222222", "ami-33333333"):
        ec2.create_launch_template_version(LaunchTemplateName=name,
                                           LaunchTemplateData={"ImageId": img})
    out = ec2.delete_launch_template_versions(LaunchTemplateName=name,
                                              Versions=["2", "1", "9"])
    assert [v["VersionNumber"] for v in out["SuccessfullyDeletedLaunchTemplateVersions"]] == [2]
    failed = {v["VersionNumber"]: v["ResponseError"]["Code"]
              for v in out["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert set(failed) == {1, 9}  # 1 is the default version
    assert failed[9] == "launchTemplateVersionDoesNotExist"
    left = ec2.describe_launch_template_versions(LaunchTemplateName=name)
    assert sorted(v["VersionNumber"] for v in left["LaunchTemplateVersions"]) == [1, 3]
    assert _version(ec2, name, "3")["LaunchTemplateData"]["ImageId"] == "ami-33333333"
    new = ec2.create_launch_template_version(LaunchTemplateName=name,
                                             LaunchTemplateData={"ImageId": "ami-44444444"})
    assert new["LaunchTemplateVersion"]["VersionNumber"] == 4  # numbers are never reused


# --- l: StartSnapshot leaves no volume -----------------------------------------------------------

def test_patch_l_start_snapshot_makes_no_volume(emu):
    ec2, ebs = emu.client("ec2", "ap-southeast-2"), emu.client("ebs", "ap-southeast-2")
    sid = snapshot(ebs, {0: block(b"l")})
    assert ec2.describe_volumes()["Volumes"] == []
    snap = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert snap["VolumeId"] == "vol-ffffffff"


# --- the launcher ----------------------------------------------------------------------------

def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].split(":")
            if int(p, 16) != port or f[3] != "0A":  # 0A = LISTEN
                continue
            if v6:
                found.add("v6:" + addr)
            else:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


def test_binds_loopback_only(emu):
    assert _listening_addresses(emu.port) == {"127.0.0.1"}


def test_delay_options_and_clean_exit():
    e = Emulator("--delay-ms-for", "DescribeImages=700", "--delay-ms-for", "ListSnapshotBlocks=700",
                 env={"BAKERY_EMULATOR_DELAY_MS": "200"})
    try:
        ec2, ebs = e.client("ec2"), e.client("ebs")
        # warm up: the first call of a region builds moto's backends (about a second)
        ec2.describe_snapshots(OwnerIds=["self"])
        ec2.describe_images(Owners=["self"])

        def timed(fn, **kw):
            t = time.monotonic()
            fn(**kw)
            return time.monotonic() - t

        assert 0.2 <= timed(ec2.describe_snapshots, OwnerIds=["self"]) < 0.65
        assert timed(ec2.describe_images, Owners=["self"]) >= 0.7
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        assert timed(ebs.list_snapshot_blocks, SnapshotId=sid) >= 0.7
        # calls run concurrently: 3 delayed calls take about one delay, not three
        threads = [threading.Thread(target=e.client("ec2").describe_images,
                                    kwargs={"Owners": ["self"]}) for _ in range(3)]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert time.monotonic() - t < 1.8
    finally:
        rc = e.stop()
    assert rc == 0, "".join(e.stderr)


# --- m: PutSnapshotBlock validation (kept after the launcher tests: same emulator) -------------

def test_patch_m_put_block_validates_like_aws(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = block(b"m")
    bad_sum = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BS,
                               Checksum=bad_sum, ChecksumAlgorithm="SHA256")
    assert error_of(e) == (400, "ValidationException")
    short = data[:4096]
    with pytest.raises(ClientError) as e:
        put(ebs, sid, 0, short)
    assert error_of(e) == (400, "ValidationException")
    put(ebs, sid, 0, data)
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    with pytest.raises(ClientError) as e:
        put(ebs, sid, 1, data)
    assert error_of(e) == (400, "ValidationException")


# --- w: RegisterImage names are unique per account and region --------------------------------

def test_patch_w_register_image_refuses_a_name_in_use(ec2, ebs):
    name = f"bakery-test-dup-{uuid.uuid4().hex[:10]}"
    first = register(ec2, snapshot(ebs, {0: block(b"w1")}), Name=name)
    second_snap = snapshot(ebs, {0: block(b"w2")})
    with pytest.raises(ClientError) as e:
        register(ec2, second_snap, Name=name)
    assert error_of(e) == (400, "InvalidAMIName.Duplicate")
    assert first in e.value.response["Error"]["Message"]
    same = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    assert [i["ImageId"] for i in same] == [first]
    # Racing registrations: exactly one wins.
    race = f"bakery-test-race-{uuid.uuid4().hex[:10]}"
    results: list[str] = []

    def attempt():
        try:
            results.append(register(ec2, second_snap, Name=race))
        except ClientError as err:
            results.append(err.response["Error"]["Code"])

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.startswith("ami-") for r in results) == [False, False, False, True], results
    # Once deregistered, the name is free again.
    ec2.deregister_image(ImageId=first)
    again = register(ec2, second_snap, Name=name)
    assert again != first
