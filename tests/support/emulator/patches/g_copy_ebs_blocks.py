"""Patch g: CopySnapshot / CopyImage carry the EBS direct block data to the target region.

moto 5.2.5: EBS direct blocks live in the EBS backend of the region that received them.
CopySnapshot makes an EC2 snapshot in the target region with no blocks, and CopyImage does not
copy snapshots at all: the new AMI gets an invented, empty 15 GiB root snapshot, whatever the
source AMI's mappings were.
AWS: a copied snapshot has the same content as its source (readable with ListSnapshotBlocks/
GetSnapshotBlock in the target region, same volume size); CopyImage copies every EBS snapshot
of the source AMI into the target region (description "Copied for DestinationAmi ... from
SourceAmi ... for SourceSnapshot ...") and the new AMI's mappings point at those copies, with
the source's root device name/type, architecture, virtualization type, ENA and boot mode.
Patch: wrap the EC2 backend's copy_snapshot (copy the block map) and copy_image (copy each
mapped snapshot through copy_snapshot, then store the rewritten mappings on the new AMI).
"""

from __future__ import annotations

import copy

from moto.ebs.models import EBSSnapshot, ebs_backends
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend as EC2SnapshotBackend

from ._common import ebs_snapshot, set_block_device_mappings, wrap


def _make_copy_snapshot(orig):
    def copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id):
        new = orig(self, source_snapshot_id, source_region, description, kms_key_id)
        src = ebs_snapshot(self.account_id, source_region, source_snapshot_id)
        dst = EBSSnapshot(account_id=self.account_id, snapshot=new)
        dst.status = "completed"
        dst.volume_size = src.volume_size
        dst.blocks = dict(src.blocks)  # Block objects are immutable once written
        ebs_backends[self.account_id][self.region_name].snapshots[new.id] = dst
        return new

    return copy_snapshot


ATTRS = ("root_device_name", "root_device_type", "architecture", "virtualization_type",
         "ena_support", "boot_mode", "imds_support", "tpm_support", "sriov_net_support")


def _make_copy_image(orig):
    def copy_image(self, source_image_id, source_region, name=None, description=None):
        ami = orig(self, source_image_id, source_region, name, description)
        src_backend = ec2_backends[self.account_id][source_region]
        src = src_backend.amis[source_image_id]
        for attr in ATTRS:
            if hasattr(src, attr):
                setattr(ami, attr, getattr(src, attr))
        bdms = copy.deepcopy(src.block_device_mappings)
        root_snap = None
        for m in bdms:
            ebs = m.get("Ebs") or {}
            sid = ebs.get("SnapshotId")
            if not sid:
                continue
            new = self.copy_snapshot(
                sid, source_region,
                f"Copied for DestinationAmi {ami.id} from SourceAmi {source_image_id} "
                f"for SourceSnapshot {sid}. Task created on {ami.creation_date:%Y-%m-%d}.",
                None,
            )
            ebs["SnapshotId"] = new.id
            if m.get("DeviceName") == ami.root_device_name:
                root_snap = new
        set_block_device_mappings(ami, bdms, root_snap)
        return ami

    return copy_image


def apply() -> None:
    wrap(EC2SnapshotBackend, "copy_snapshot", _make_copy_snapshot)
    wrap(AmiBackend, "copy_image", _make_copy_image)
