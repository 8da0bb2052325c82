"""The code's shape, checked so that CI fails on a regression: lint, layers, cycles, private names,
and a package that installs with a working `dragonclf` command."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=kw.pop("cwd", REPO), capture_output=True, text=True, timeout=300, **kw)


def test_ruff_is_clean():
    r = _run([str(BIN / "ruff"), "check", "--no-cache", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts_hold():
    """Layers (cli -> access -> stages -> services -> store -> base), no cycles, no gradio in the library."""
    r = _run([str(BIN / "lint-imports"), "--no-cache"])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "BROKEN" not in r.stdout and r.stdout.count("KEPT") >= 3


def _private_uses(path: Path, package_modules: set[str]) -> list[str]:
    """`from dragonclf.x import _name` and `x._name` on an imported dragonclf module, in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dragonclf"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in package_modules:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_"):
                    found.append(f"{path.name}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("dragonclf"):
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}: {aliases[node.value.id]}.{node.attr}")
    return found




def test_no_module_or_test_uses_another_modules_private_names():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
               for p in (REPO / "dragonclf").rglob("*.py")}
    files = [*(REPO / "dragonclf").rglob("*.py"), *(REPO / "ui").rglob("*.py"), REPO / "app.py",
             *(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py")]
    found = {use for f in files for use in _private_uses(f, modules)}
    assert found == set(), sorted(found)


def test_pip_install_gives_a_working_dragonclf_command(tmp_path):
    """`pip install -e .` in a fresh venv: the `dragonclf` command is `python -m dragonclf`.

    The venv sees this environment's packages through a .pth file (torch is not
    downloaded again) and installs without an index or build isolation: offline.
    """
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "outer-env.pth").write_text("\n".join(ours) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", DRAGONCLF_HOME=str(tmp_path / "home"))
    r = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
             env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    command = env_dir / "bin" / "dragonclf"
    assert command.is_file()
    out = _run([str(command), "datasets", "--json"], env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    same = _run([str(py), "-m", "dragonclf", "datasets", "--json"], env=env, cwd=tmp_path)
    assert out.stdout == same.stdout and "demo" in out.stdout
    bad = _run([str(command), "status", "--dataset", "no-such-dataset"], env=env, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
