"""Patch e: GetSnapshotBlock / ListSnapshotBlocks behave like AWS.

moto 5.2.5: GetSnapshotBlock of a block that was never written raises KeyError (HTTP 500), the
BlockToken is not checked and an unknown snapshot is a 500 too; ListSnapshotBlocks returns
the blocks in write order, all at once (MaxResults, NextToken, StartingBlockIndex ignored),
and knows only snapshots made by StartSnapshot.
AWS: GetSnapshotBlock needs the token ListSnapshotBlocks/ListChangedBlocks gave for that
block; for a block that has no data (or a token that is not that block's) it answers
ValidationException (HTTP 400, Reason INVALID_BLOCK_TOKEN; INVALID_BLOCK past the end of the
volume). ListSnapshotBlocks lists only written blocks, sorted by index, from
StartingBlockIndex, at most MaxResults (100..10000, default 10000) per page with a NextToken,
BlockSize 524288 and VolumeSize in GiB. Unknown snapshot: ResourceNotFoundException (404).
Any completed snapshot of the region can be read, not only those made by StartSnapshot.
Patch: replace EBSResponse.get_snapshot_block and EBSResponse.list_snapshot_blocks.
"""

from __future__ import annotations

import base64
import datetime

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ebs.responses import EBSResponse

from ._common import BLOCK_SIZE, EbsValidationException, ebs_snapshot_of


def page_params(self: EBSResponse) -> tuple[int, int]:
    """(first block index, page size) from NextToken/StartingBlockIndex/MaxResults."""
    max_results = self._get_param("MaxResults")
    if max_results is None:
        max_results = 10000
    max_results = int(max_results)
    if not 100 <= max_results <= 10000:
        raise EbsValidationException(
            "MaxResults must be between 100 and 10000.", "INVALID_PARAMETER_VALUE")
    token = self._get_param("NextToken")
    if token:
        try:
            kind, start = base64.urlsafe_b64decode(token.encode()).decode().split(":")
            assert kind == "bakery-emu-page"
            return int(start), max_results
        except Exception:
            raise EbsValidationException("The page token is not valid.", "INVALID_PAGE_TOKEN")
    start = self._get_param("StartingBlockIndex")
    return (int(start) if start is not None else 0), max_results


def next_token(index: int) -> str:
    return base64.urlsafe_b64encode(f"bakery-emu-page:{index}".encode()).decode()


def expiry() -> datetime.datetime:
    return utcnow() + datetime.timedelta(days=7)


def get_snapshot_block(self: EBSResponse) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    index = int(self._get_param("BlockIndex"))
    token = self._get_param("BlockToken")
    snap = ebs_snapshot_of(self, snapshot_id)
    if index * BLOCK_SIZE >= int(snap.volume_size) * (1 << 30):
        raise EbsValidationException(
            f"The block index {index} is beyond the end of the volume.", "INVALID_BLOCK")
    block = snap.blocks.get(index)
    if block is None or (token and token != block.block_token):
        raise EbsValidationException("The block token is not valid.", "INVALID_BLOCK_TOKEN")
    return ActionResult({
        "DataLength": block.data_length if block.data_length is not None
        else len(block.block_data),
        "BlockData": block.block_data,
        "Checksum": block.checksum,
        "ChecksumAlgorithm": block.checksum_algorithm or "SHA256",
    })


def list_snapshot_blocks(self: EBSResponse) -> ActionResult:
    snap = ebs_snapshot_of(self, self._get_param("SnapshotId"))
    start, limit = page_params(self)
    indices = sorted(i for i in snap.blocks if i >= start)
    page, rest = indices[:limit], indices[limit:]
    result = {
        "Blocks": [{"BlockIndex": i, "BlockToken": snap.blocks[i].block_token} for i in page],
        "ExpiryTime": expiry(),
        "VolumeSize": int(snap.volume_size),
        "BlockSize": BLOCK_SIZE,
    }
    if rest:
        result["NextToken"] = next_token(rest[0])
    return ActionResult(result)


def apply() -> None:
    EBSResponse.get_snapshot_block = get_snapshot_block
    EBSResponse.list_snapshot_blocks = list_snapshot_blocks
