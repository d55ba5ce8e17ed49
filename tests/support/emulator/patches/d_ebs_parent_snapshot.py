"""Patch d: StartSnapshot honours ParentSnapshotId.

moto 5.2.5: ParentSnapshotId is ignored: the new snapshot starts empty and the response has no
ParentSnapshotId.
AWS: the new snapshot is incremental on the parent: every block of the parent that is not
overwritten is part of the child (ListSnapshotBlocks/GetSnapshotBlock on the child return
them), StartSnapshot returns ParentSnapshotId, an unknown parent is ResourceNotFoundException,
a parent larger than VolumeSize is a ValidationException (INVALID_VOLUME_SIZE), and
ParentSnapshotId with Encrypted is a ValidationException.
Patch: wrap EBSResponse.start_snapshot; the child shares the parent's Block objects (same
block tokens, as unchanged blocks keep theirs) and overwrites them on PutSnapshotBlock.
"""

from __future__ import annotations

from moto.ebs.responses import EBSResponse

from ._common import EbsValidationException, ebs_snapshot_of, truthy, wrap


def _make(orig):
    def start_snapshot(self: EBSResponse):
        parent_id = self._get_param("ParentSnapshotId")
        parent = None
        if parent_id:
            if truthy(self._get_param("Encrypted")):
                raise EbsValidationException(
                    "ParentSnapshotId and Encrypted cannot be specified together.",
                    "INVALID_PARAMETER_VALUE")
            parent = ebs_snapshot_of(self, parent_id)
            if int(self._get_param("VolumeSize")) < int(parent.volume_size):
                raise EbsValidationException(
                    "The volume size must be at least the size of the parent snapshot.",
                    "INVALID_VOLUME_SIZE")
        result = orig(self)
        if parent is not None:
            snap = self.ebs_backend.snapshots[result.result["SnapshotId"]]
            snap.blocks.update(parent.blocks)
            snap.parent_snapshot_id = parent_id
            result.result["ParentSnapshotId"] = parent_id
        return result

    return start_snapshot


def apply() -> None:
    wrap(EBSResponse, "start_snapshot", _make)
