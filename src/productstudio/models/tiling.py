"""Full-size photos through a convolutional network in tiles, so memory stays bounded for a 24 MP photo."""

from __future__ import annotations

from typing import Iterator


def tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[slice, slice, slice, slice]]:
    """For each ``tile`` x ``tile`` piece of an image: where it goes (rows, columns of the image), and where the
    computed piece lies (rows, columns) with ``overlap`` pixels of context around it, clipped to the image.
    Yields (out_rows, out_cols, in_rows, in_cols); the piece inside the computed window is at
    (top - in_top, left - in_left)."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            in_rows = slice(max(0, top - overlap), min(height, top + tile + overlap))
            in_cols = slice(max(0, left - overlap), min(width, left + tile + overlap))
            yield slice(top, min(height, top + tile)), slice(left, min(width, left + tile)), in_rows, in_cols


def inner(out: slice, window: slice) -> slice:
    """``out``'s rows (or columns) inside the computed ``window``."""
    return slice(out.start - window.start, out.stop - window.start)
