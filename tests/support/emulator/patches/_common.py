"""Helpers shared by the patches (moto 5.2.5)."""

from __future__ import annotations

import copy
from typing import Any

from moto.core.exceptions import ServiceException
from moto.ebs.models import EBSSnapshot, ebs_backends
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami

# EBS direct APIs always work in 512 KiB blocks.
BLOCK_SIZE = 524288


class EbsValidationException(ServiceException):
    """EBS direct ValidationException (HTTP 400) with its Reason field."""

    code = "ValidationException"

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class EbsResourceNotFoundException(ServiceException):
    """EBS direct ResourceNotFoundException (HTTP 404) with its Reason field."""

    code = "ResourceNotFoundException"

    def __init__(self, message: str, reason: str = "SNAPSHOT_NOT_FOUND"):
        super().__init__(message)
        self.reason = reason


def wrap(cls: type, name: str, make):
    """Replace cls.name by make(original); returns the original."""
    orig = getattr(cls, name)
    setattr(cls, name, make(orig))
    return orig


def ebs_snapshot(account_id: str, region: str, snapshot_id: str) -> EBSSnapshot:
    """The EBS-direct view of any EC2 snapshot of this region.

    moto only knows snapshots made by StartSnapshot; on AWS every snapshot (CreateSnapshot,
    CopySnapshot, the snapshot of an AMI) can be read with the EBS direct APIs. A snapshot
    moto has no block data for reads as empty (no written blocks).
    """
    backend = ebs_backends[account_id][region]
    ec2_snap = ec2_backends[account_id][region].snapshots.get(snapshot_id)
    if ec2_snap is None:  # never existed, or deleted with DeleteSnapshot
        backend.snapshots.pop(snapshot_id, None)
        raise EbsResourceNotFoundException(f"The snapshot '{snapshot_id}' does not exist.")
    snap = backend.snapshots.get(snapshot_id)
    if snap is not None:
        return snap
    snap = EBSSnapshot(account_id=account_id, snapshot=ec2_snap)
    snap.status = "completed"
    backend.snapshots[snapshot_id] = snap
    return snap


def ebs_snapshot_of(response: Any, snapshot_id: str) -> EBSSnapshot:
    return ebs_snapshot(response.current_account, response.region, snapshot_id)


# --- AMI block device mappings -----------------------------------------------------------
# moto's Ami.block_device_mappings is a read-only property that always reports one invented
# 15 GiB root snapshot. Patches a and g store the real mappings on the Ami instead.

_ORIG_BDM = Ami.block_device_mappings


def _bdm_property(self: Ami) -> list[dict[str, Any]]:
    real = getattr(self, "_bakery_bdms", None)
    if real is not None:
        return copy.deepcopy(real)
    return _ORIG_BDM.fget(self)


def install_bdm_property() -> None:
    if not getattr(Ami, "_bakery_bdm_installed", False):
        Ami.block_device_mappings = property(_bdm_property)
        Ami._bakery_bdm_installed = True


def set_block_device_mappings(ami: Ami, bdms: list[dict[str, Any]], root_snapshot) -> None:
    """Give `ami` these mappings and drop the root snapshot moto invented for it."""
    install_bdm_property()
    backend = ami.ec2_backend
    invented = getattr(ami, "ebs_snapshot", None)
    if invented is not None and invented is not root_snapshot:
        backend.snapshots.pop(invented.id, None)
    if root_snapshot is not None:
        ami.ebs_snapshot = root_snapshot
    ami._bakery_bdms = bdms
    # AWS refuses DeleteSnapshot while a registered AMI uses the snapshot (moto's check
    # looks at Snapshot.from_ami).
    for m in bdms:
        sid = (m.get("Ebs") or {}).get("SnapshotId")
        snap = backend.snapshots.get(sid) if sid else None
        if snap is not None and not (snap.from_ami and snap.from_ami in backend.amis):
            snap.from_ami = ami.id


def truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() == "true"
    return bool(v)
