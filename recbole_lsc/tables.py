"""Plain tables as text, shared by every writer of results tables (leaderboards, results pages,
tuning trials, benchmarks): markdown lines and CSV, each cell rendered by the caller."""

import csv
import io


def markdown_lines(header, rows, cell=str):
    """A markdown table as lines: the header, the rule, one line per row (``cell(value)`` each)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def csv_text(header, rows):
    """The table as CSV text (``\\n`` line ends; quoting by the csv module)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
