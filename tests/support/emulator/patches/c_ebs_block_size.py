"""Patch c: EBS direct BlockSize is 524288.

moto 5.2.5: every EBS direct snapshot reports BlockSize 512 (StartSnapshot,
ListSnapshotBlocks, ListChangedBlocks).
AWS: EBS direct blocks are always 512 KiB: BlockSize 524288.
Patch: wrap EBSSnapshot.__init__ to set block_size = 524288.
"""

from __future__ import annotations

from moto.ebs.models import EBSSnapshot

from ._common import BLOCK_SIZE, wrap


def _make(orig):
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        self.block_size = BLOCK_SIZE

    return __init__


def apply() -> None:
    wrap(EBSSnapshot, "__init__", _make)
