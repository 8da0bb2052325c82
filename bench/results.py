"""bench/RESULTS.md: one "## <Name>" section per benchmark, each replaced whole by its script."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the "## <name>" section, leaving the other sections as they are."""
    doc = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {name}\n\n{text}\n"
    start = doc.find(f"\n## {name}\n")
    if start == -1:
        doc = doc.rstrip("\n") + "\n\n" + section
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[: start + 1] + section + (doc[end:] if end != -1 else "")
    path.write_text(doc)
