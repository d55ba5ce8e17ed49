"""Benchmark helpers that talk to the local AWS emulator with boto3 (run with the emulator's
venv python; AWS_ENDPOINT_URL etc. come from the environment bench/run sets).

  emu.py publish FILE NAME      upload FILE's non-zero 512 KiB blocks as a snapshot (EBS direct,
                                32 threads), register it as an AMI; prints {"image_id", "snapshot_id"}
  emu.py ceiling BLOCKS         PutSnapshotBlock throughput with 64 threads into a fresh snapshot
                                (no disk reads, checksums precomputed); prints {"mib_per_s", ...}
  emu.py blocks SNAPSHOT_ID      how many blocks were written to a snapshot (ListSnapshotBlocks)
  emu.py kms-key REGION          a new KMS key in REGION (the emulator's KMS); prints its ARN
"""

import base64
import concurrent.futures as cf
import hashlib
import json
import os
import sys
import time

import boto3

BLOCK = 512 * 1024


def clients():
    region = os.environ.get("AWS_REGION", "us-east-1")
    return boto3.client("ebs", region_name=region), boto3.client("ec2", region_name=region)


def data_blocks(path):
    """(index, bytes) for every 512 KiB block holding data that is not all zeros."""
    zero = bytes(BLOCK)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            start = data - data % BLOCK
            try:
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError:
                hole = size
            end = min(size, -(-hole // BLOCK) * BLOCK)
            f.seek(start)
            for off in range(start, end, BLOCK):
                b = f.read(BLOCK)
                if len(b) < BLOCK:
                    b = b + bytes(BLOCK - len(b))
                if b != zero:
                    yield off // BLOCK, b
            pos = end


def put(ebs, snap, idx, b):
    digest = base64.b64encode(hashlib.sha256(b).digest()).decode()
    ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=idx, BlockData=b, DataLength=BLOCK,
                           Checksum=digest, ChecksumAlgorithm="SHA256")


def publish(path, name):
    ebs, ec2 = clients()
    size_gib = -(-os.path.getsize(path) // (1 << 30))
    snap = ebs.start_snapshot(VolumeSize=size_gib, Description=f"bench base {name}")["SnapshotId"]
    n = 0
    with cf.ThreadPoolExecutor(32) as pool:
        futs = set()
        for idx, b in data_blocks(path):
            futs.add(pool.submit(put, ebs, snap, idx, b))
            n += 1
            if len(futs) >= 128:
                done, futs = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
                for d in done:
                    d.result()
        for d in cf.as_completed(futs):
            d.result()
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=n)
    img = ec2.register_image(
        Name=name, Architecture="x86_64", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
        EnaSupport=True, BootMode="legacy-bios",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {
            "SnapshotId": snap, "VolumeSize": size_gib, "VolumeType": "gp3", "DeleteOnTermination": True}}],
    )["ImageId"]
    print(json.dumps({"image_id": img, "snapshot_id": snap, "blocks": n}))


def ceiling(blocks):
    ebs, _ = clients()
    snap = ebs.start_snapshot(VolumeSize=max(1, -(-blocks * BLOCK // (1 << 30))), Description="bench ceiling")["SnapshotId"]
    data = [os.urandom(BLOCK) for _ in range(8)]
    sums = [base64.b64encode(hashlib.sha256(b).digest()).decode() for b in data]

    def one(i):
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data[i % 8], DataLength=BLOCK,
                               Checksum=sums[i % 8], ChecksumAlgorithm="SHA256")

    t = time.monotonic()
    with cf.ThreadPoolExecutor(64) as pool:
        list(pool.map(one, range(blocks)))
    secs = time.monotonic() - t
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=blocks)
    print(json.dumps({"blocks": blocks, "seconds": round(secs, 3), "mib_per_s": round(blocks * BLOCK / (1 << 20) / secs, 1)}))


def blocks(snap):
    ebs, _ = clients()
    n, token = 0, None
    while True:
        kw = {"SnapshotId": snap, "MaxResults": 10000}
        if token:
            kw["NextToken"] = token
        page = ebs.list_snapshot_blocks(**kw)
        n += len(page.get("Blocks", []))
        token = page.get("NextToken")
        if not token:
            break
    print(n)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "publish":
        publish(args[0], args[1])
    elif cmd == "ceiling":
        ceiling(int(args[0]))
    elif cmd == "blocks":
        blocks(args[0])
    elif cmd == "kms-key":
        kms = boto3.client("kms", region_name=args[0])
        print(kms.create_key(Description="bakery bench")["KeyMetadata"]["Arn"])
    else:
        sys.exit(f"emu.py: unknown command {cmd}")
