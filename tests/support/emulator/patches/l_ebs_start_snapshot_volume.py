"""Patch l: StartSnapshot leaves no stray EBS volume.

moto 5.2.5: StartSnapshot creates a real EC2 volume (in zone <region>a) to hang the snapshot
on and never deletes it, so DescribeVolumes shows one leaked volume per EBS direct upload
(and a "no leaked resources" test would fail).
AWS: StartSnapshot creates no volume; the snapshot's VolumeId is "vol-ffffffff".
Patch: wrap EBSBackend.start_snapshot: drop that volume from the EC2 backend and rename it.
"""

from __future__ import annotations

from moto.ebs.models import EBSBackend

from ._common import wrap


def _make(orig):
    def start_snapshot(self: EBSBackend, *args, **kwargs):
        ebs_snap = orig(self, *args, **kwargs)
        ec2 = self.ec2_backend
        snap = ec2.snapshots[ebs_snap.snapshot_id]
        vol = snap.volume
        if ec2.volumes.get(vol.id) is vol:
            ec2.volumes.pop(vol.id)
            vol.id = "vol-ffffffff"
        return ebs_snap

    return start_snapshot


def apply() -> None:
    wrap(EBSBackend, "start_snapshot", _make)
