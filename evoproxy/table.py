"""Plain text for the command line: tables, and strings made safe to print."""

from __future__ import annotations


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return str(value)


def format_table(rows: list[dict], columns: list[str], headers: list[str] | None = None) -> str:
    """`rows` as an aligned text table of `columns` (header names default to the keys).
    Numbers are right-aligned, floats shown with 4 significant digits, shapes as 16×3×3×3."""
    headers = headers or columns
    cells = [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[c], (int, float)) for r in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in cells])


def printable(text) -> str:
    """`text` with its control characters escaped (\\x1b, \\n, ...): strings read from files (a
    run's database, a run's folder name) are data, and must not move the cursor or recolour the
    terminal they are printed on."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def printable_lines(text: str) -> str:
    """`printable` line by line: a text of several lines (a report, a description) keeps its
    line breaks, and nothing else it holds reaches the terminal raw."""
    return "\n".join(printable(line) for line in str(text).split("\n"))
