"""Roots of the aligned complete subtrees of a log, cached as the log grows.

Subtrees of 2**BLOCK_LEVEL leaves and larger are cached; smaller ones are read and
hashed. Only rows already committed (never rewritten) are ever folded in, so a cached
root never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.core import merkle

BLOCK_LEVEL = 8
BLOCK = 1 << BLOCK_LEVEL


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree (len(hashes) a power of two), level by level."""
    level = list(hashes)
    while len(level) > 1:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class CompleteSubtrees:
    """Roots of the aligned complete subtrees of BLOCK leaves and more, bottom level first."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def blocks(self) -> int:
        return len(self.levels[0])

    def add_block(self, block_root: bytes) -> None:
        node, level = block_root, 0
        while True:
            if level == len(self.levels):
                self.levels.append([])
            row = self.levels[level]
            row.append(node)
            if len(row) % 2:
                return
            node, level = merkle.node_hash(row[-2], row[-1]), level + 1

    def get(self, level: int, index: int) -> bytes:
        return self.levels[level - BLOCK_LEVEL][index]
