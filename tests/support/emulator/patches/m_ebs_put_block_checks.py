"""Patch m: PutSnapshotBlock checks what AWS checks.

moto 5.2.5: PutSnapshotBlock stores whatever it gets: any length, a wrong SHA-256 checksum,
writes into a snapshot that is already completed.
AWS: a block is exactly 524288 bytes (DataLength 524288), the Checksum header must be the
base64 SHA-256 of the data (ChecksumAlgorithm SHA256), and only a pending snapshot takes
writes; otherwise ValidationException (HTTP 400). Product code that gets any of these wrong
must fail here as it would on AWS.
Patch: wrap EBSResponse.put_snapshot_block and validate before storing.
"""

from __future__ import annotations

import base64
import hashlib

from moto.ebs.responses import EBSResponse

from ._common import BLOCK_SIZE, EbsValidationException, ebs_snapshot_of, wrap


def _make(orig):
    def put_snapshot_block(self: EBSResponse):
        snap = ebs_snapshot_of(self, self._get_param("SnapshotId"))
        data = self._get_param("BlockData") or b""
        if isinstance(data, str):
            data = data.encode()
        if snap.status != "pending":
            raise EbsValidationException(
                f"The snapshot {snap.snapshot_id} is {snap.status} and takes no more writes.",
                "INVALID_SNAPSHOT_ID")
        length = self._get_param("DataLength")
        if len(data) != BLOCK_SIZE or (length is not None and int(length) != BLOCK_SIZE):
            raise EbsValidationException(
                f"The block data must be {BLOCK_SIZE} bytes, got {len(data)}.",
                "INVALID_PARAMETER_VALUE")
        if (self._get_param("ChecksumAlgorithm") or "SHA256") != "SHA256":
            raise EbsValidationException("ChecksumAlgorithm must be SHA256.",
                                         "INVALID_PARAMETER_VALUE")
        want = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if self._get_param("Checksum") != want:
            raise EbsValidationException(
                "The checksum does not match the block data.", "INVALID_PARAMETER_VALUE")
        return orig(self)

    return put_snapshot_block


def apply() -> None:
    wrap(EBSResponse, "put_snapshot_block", _make)
