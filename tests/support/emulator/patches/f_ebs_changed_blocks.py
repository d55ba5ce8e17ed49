"""Patch f: ListChangedBlocks is correct.

moto 5.2.5: it walks only the FIRST snapshot's blocks, so blocks written only in the second
snapshot (the usual case: new data in a child snapshot) are never listed, blocks are compared
by content, FirstSnapshotId is required (500 without it), and there is no pagination.
AWS: lists, sorted by index, every block that differs between the two snapshots (different
block token: a block the second snapshot inherited unchanged keeps its token), with
FirstBlockToken and/or SecondBlockToken for the side(s) that have the block; without
FirstSnapshotId it lists all blocks of the second snapshot (SecondBlockToken only).
MaxResults/NextToken/StartingBlockIndex paginate; BlockSize 524288; VolumeSize in GiB of the
second snapshot.
Patch: replace EBSResponse.list_changed_blocks.
"""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.ebs.responses import EBSResponse

from ._common import BLOCK_SIZE, ebs_snapshot_of
from .e_ebs_snapshot_blocks import expiry, next_token, page_params


def list_changed_blocks(self: EBSResponse) -> ActionResult:
    second = ebs_snapshot_of(self, self._get_param("SecondSnapshotId"))
    first_id = self._get_param("FirstSnapshotId")
    first_blocks = ebs_snapshot_of(self, first_id).blocks if first_id else {}
    start, limit = page_params(self)
    changed = []
    for i in sorted(set(first_blocks) | set(second.blocks)):
        if i < start:
            continue
        a, b = first_blocks.get(i), second.blocks.get(i)
        if a is not None and b is not None and a.block_token == b.block_token:
            continue
        entry = {"BlockIndex": i}
        if a is not None:
            entry["FirstBlockToken"] = a.block_token
        if b is not None:
            entry["SecondBlockToken"] = b.block_token
        changed.append(entry)
    page, rest = changed[:limit], changed[limit:]
    result = {
        "ChangedBlocks": page,
        "ExpiryTime": expiry(),
        "VolumeSize": int(second.volume_size),
        "BlockSize": BLOCK_SIZE,
    }
    if rest:
        result["NextToken"] = next_token(rest[0]["BlockIndex"])
    return ActionResult(result)


def apply() -> None:
    EBSResponse.list_changed_blocks = list_changed_blocks
