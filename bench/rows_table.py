"""Printing a benchmark's rows as an aligned text table (blank cells for the figures a row does not have)."""

from __future__ import annotations


def print_rows(title: str, label: str, rows: list[dict], columns: list[tuple[str, str, int, str]]) -> None:
    """``columns``: (key, header, width, format) after the ``label`` column, which is as wide as ``title``."""
    width = max(len(title), *(len(str(row[label])) for row in rows))
    print(f"{title:<{width}} " + " ".join(f"{header:>{w}}" for _, header, w, _ in columns))
    for row in rows:
        cells = [f"{row[key]:{w}{fmt}}" if row.get(key) is not None else " " * w for key, _, w, fmt in columns]
        print(f"{row[label]:<{width}} " + " ".join(cells))
