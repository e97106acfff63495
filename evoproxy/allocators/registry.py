"""The allocators by name: `ALLOCATORS`, a dict from the name that `evoproxy allocate --method`
takes (and the bit file's proxy) to the method's entry, which callers can extend."""

from __future__ import annotations

from . import adaqat, edmips, seam, smpq
from .interface import Allocator

ALLOCATORS: dict[str, Allocator] = {
    "edmips": edmips.ALLOCATOR,
    "seam": seam.ALLOCATOR,
    "smpq": smpq.ALLOCATOR,
    "adaqat": adaqat.ALLOCATOR,
}
