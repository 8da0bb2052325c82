"""The command line: a thin shell over the library.

Each area registers its subcommands from its own module (data, collect, train,
clean). A command returns a JSON-able result; `--json` prints it as JSON, else
as short text. Library errors (DragonError) become one line on stderr and exit
code 1; bad arguments exit 2 (argparse). No tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dragonclf.errors import DragonError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

AREAS = ("data", "collect", "manage", "train", "clean", "distributed", "users")
# Areas whose commands need no model: their modules and `register` import no torch, fastai, timm or
# scikit-learn, and a command of theirs builds a parser of these areas only, so `status` answers at once.
MODEL_FREE_AREAS = ("data", "collect", "manage", "users")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like argparse, minus the usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments, only the areas it needs (all of them for help or an unknown command)."""
    parser = _Parser(prog="python -m dragonclf", description="Build an image classifier from web images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    import importlib

    for area in AREAS:
        if area not in MODEL_FREE_AREAS and command in sub.choices:
            continue  # a model-free command: the model areas (and torch) are not needed
        importlib.import_module(f"dragonclf.cli.{area}").register(sub)
    return parser


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def emit(result, as_json: bool, text=None) -> None:
    """Print a command's result: JSON, or `text(result)` / a readable default."""
    if as_json:
        print(json.dumps(result, indent=2, default=str, ensure_ascii=False))
    elif text is not None:
        print(text(result))
    elif isinstance(result, dict):
        for k, v in result.items():
            print(f"{k}: {json.dumps(v, default=str, ensure_ascii=False) if isinstance(v, (dict, list)) else v}")
    else:
        print(json.dumps(result, indent=2, default=str, ensure_ascii=False))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except DragonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
