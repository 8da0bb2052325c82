"""CLI for Clean: ranked suspects (edits and the dataset export, which need no model, live in cli/data.py)."""

from __future__ import annotations

import sys

from dragonclf.cli import add_json_flag, emit


def register(sub) -> None:
    from dragonclf import clean
    from dragonclf.backbones import DEFAULT_BACKBONE

    p = sub.add_parser("suspects", help="rank likely mislabels, duplicates, label conflicts and poor-quality images")
    p.add_argument("--dataset", required=True)
    p.add_argument("--kind", choices=clean.KINDS, help="only this kind of suspect (default: all)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="embeddings for the mislabel ranking")
    add_json_flag(p)
    p.set_defaults(func=cmd_suspects)


def _text(items: list[dict]) -> str:
    if not items:
        return "no suspects"
    lines = []
    for s in items:
        to = f" -> {s['suggested']}" if s["suggested"] else ""
        lines.append(f"{s['kind']:9} {s['score']:6.3f} {s['id']} [{s['label']}{to}] {s['action']}: {s['reason']}")
    return "\n".join(lines)


def cmd_suspects(a) -> int:
    from dragonclf import clean
    from dragonclf.store import Store

    found = clean.find_suspects(Store.open(a.dataset), [a.kind] if a.kind else None, backbone=a.backbone)
    for note in found.notes:  # kinds that could not run: say why, on stderr, so --json stays parseable
        print(f"note: {note}", file=sys.stderr)
    emit(found.items, a.json, _text)
    return 0

