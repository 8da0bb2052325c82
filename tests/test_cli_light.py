"""Commands that need no model answer without importing torch, fastai, timm or scikit-learn."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO

HEAVY = ("torch", "torchvision", "fastai", "timm", "sklearn", "onnxruntime", "gradio")

# One process runs the model-free commands in turn, as a person would, then reports what got imported.
SCRIPT = textwrap.dedent("""
    import json, sys
    from dragonclf.cli import main

    runs = []
    for args in json.loads(sys.argv[1]):
        runs.append((args[0], main(args)))
    print(json.dumps({"runs": runs, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
""")


def run_commands(commands, home):
    env = {**os.environ, "DRAGONCLF_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands), json.dumps(HEAVY)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_status_imports_no_model_library(home, photo_files):
    out = run_commands([["create", "pets"], ["status", "--dataset", "pets"]], home)
    assert out == {"runs": [["create", 0], ["status", 0]], "heavy": []}


def test_every_model_free_command_imports_no_model_library(home, photo_files, tmp_path):
    tree = tmp_path / "tree"
    for label in ("fishes", "tools"):
        (tree / label).mkdir(parents=True)
        for f in photo_files[label][:3]:
            (tree / label / f.name).write_bytes(f.read_bytes())
    urls = tmp_path / "urls.txt"
    urls.write_text("# nothing to fetch\n")
    d = ["--dataset", "pets"]
    commands = [["import", str(tree), *d], ["status", *d], ["datasets"], ["trash", "no-such-id", *d],
                ["undo", *d], ["redo", *d], ["check", *d], ["export-dataset", *d, "--out", str(tmp_path / "x.zip")],
                ["collect", *d, "--label", "tools", "--urls", str(urls), "--quiet"],
                ["label", "rename", "fishes", "fish", *d], ["dataset", "deleted"]]
    out = run_commands(commands, home)
    assert out["heavy"] == []
    assert [name for name, _ in out["runs"]] == [c[0] for c in commands]
    assert (tmp_path / "x.zip").is_file() and (home / "datasets" / "pets" / "tools").is_dir()


def test_a_model_command_still_gets_its_options(home):
    """`train` (which needs a model) registers its area: its options parse, its defaults come from the library."""
    from dragonclf.cli import build_parser

    args = build_parser(["train", "--dataset", "demo"]).parse_args(["train", "--dataset", "demo"])
    assert args.mode == "quick" and args.epochs >= 1
    light = build_parser(["status", "--dataset", "demo"])
    assert "train" not in light._subparsers._group_actions[0].choices  # not built for a model-free command
    full = build_parser()
    assert {"train", "suspects", "embed", "status", "export-dataset"} <= set(full._subparsers._group_actions[0].choices)
