"""A shared deployment for the sign-in tests: one data root, two servers, four kinds of caller.

- a private server on loopback with a user list (alice, bob, and olga the admin): password
  login stands in for "Sign in with Hugging Face";
- the same data served "as a Space" (SPACE_ID and placeholder OAuth settings), where
  nobody signs in here: every caller there is an anonymous visitor.

Alice owns a dataset with a trained quick model before either server starts. `call`
speaks Gradio's own queue protocol, so it reaches every event by index (fn_index),
named or not, the way a browser does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app_fixtures import free_port
from conftest import REPO

PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "olga": "olga-password"}
SECRET_LABELS = ("alicelabel-one", "alicelabel-two")


@dataclass
class World:
    home: Path
    private_url: str
    space_url: str
    dataset: str  # Alice's dataset (its folder name)
    model: str  # its quick model
    image_ids: list[str]
    photo: Path
    procs: list


def build_world(tmp: Path, photo_files) -> World:
    home = tmp / "home"
    home.mkdir()
    users = tmp / "users.txt"
    env = {**os.environ, "DRAGONCLF_HOME": str(home)}
    for name, pw in PASSWORDS.items():
        subprocess.run([sys.executable, "-m", "dragonclf", "user", "add", name, "--file", str(users)], input=pw + "\n",
                       env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=120)
    labels = sorted(photo_files)[:2]
    setup = f"""
import json, sys
from dragonclf import access, train
from dragonclf.identity import Identity
from dragonclf.importer import import_files
alice = Identity("user:alice", "alice", "user")
store = access.create_dataset(alice, "birds")
for label, files in zip({list(SECRET_LABELS)!r}, {[[str(p) for p in photo_files[lab][:6]] for lab in labels]!r}):
    import_files(store, files, label)
model = train.train(store, mode="quick", dataset=store.name).model_dir.name
print(json.dumps({{"dataset": store.name, "model": model, "ids": [r.id for r in store.images()]}}))
"""
    out = subprocess.run([sys.executable, "-c", setup], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    made = json.loads(out.stdout.strip().splitlines()[-1])
    base = {**env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1"}
    for k in ("SPACE_ID", "DRAGONCLF_USER", "DRAGONCLF_PASSWORD", "PORT"):
        base.pop(k, None)
    p1, p2 = free_port(), free_port()
    private = {**base, "DRAGONCLF_USERS_FILE": str(users), "DRAGONCLF_ADMINS": "olga", "GRADIO_SERVER_PORT": str(p1)}
    space = {**base, "SYSTEM": "spaces", "SPACE_ID": "olga/dragonclf", "SPACE_AUTHOR_NAME": "olga", "SPACE_HOST": f"127.0.0.1:{p2}",
             "OAUTH_CLIENT_ID": "placeholder", "OAUTH_CLIENT_SECRET": "placeholder", "OAUTH_SCOPES": "openid profile",
             "OPENID_PROVIDER_URL": "http://127.0.0.1:9", "GRADIO_SERVER_PORT": str(p2), "PORT": str(p2)}
    # the servers' logs go to files: a pipe nobody reads would fill and stop them
    logs = [open(tmp / f"{n}.log", "w") for n in ("private", "space")]
    procs = [subprocess.Popen([sys.executable, "app.py"], env=e, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
             for e, log in zip((private, space), logs)]
    for port, proc, log in zip((p1, p2), procs, logs):
        wait_for(port, proc, Path(log.name))
    photo = photo_files[labels[0]][7]
    return World(home, f"http://127.0.0.1:{p1}/", f"http://127.0.0.1:{p2}/", made["dataset"], made["model"],
                 made["ids"], photo, procs)


def wait_for(port: int, proc, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"app did not start: {log.read_text()[-3000:]}")


def stop_world(world: World) -> None:
    for proc in world.procs:
        proc.terminate()
    for proc in world.procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def people_world(tmp_path_factory, photo_files):
    """The deployment above, started once for every module that uses it."""
    w = build_world(tmp_path_factory.mktemp("people"), photo_files)
    yield w
    stop_world(w)


class Caller:
    """One person's browser-like session: signed in (or not), calling events by index."""

    def __init__(self, url: str, name: str | None = None):
        self.url = url
        # as gradio_client does: errors come back as errors (the page gets them in a status line instead)
        self.http = httpx.Client(base_url=url, timeout=60, headers={"x-gradio-user": "api"})
        self.session = uuid.uuid4().hex[:11]
        if name:
            r = self.http.post("/login", data={"username": name, "password": PASSWORDS[name]})
            assert r.status_code == 200, r.text
        self.config = self.http.get("/config").json()

    def upload(self, path: Path) -> dict:
        r = self.http.post("/gradio_api/upload", files={"files": (path.name, path.read_bytes())})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, fn_index: int, data: list, event_data=None) -> tuple[bool, object]:
        """(True, output data) or (False, the error message)."""
        self.session = uuid.uuid4().hex[:11]  # one stream per call: a stale stream must not take the answer
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session, "event_data": event_data,
                "trigger_id": None}
        r = self.http.post("/gradio_api/queue/join", json=body)
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {r.text[:300]}"
        event_id = r.json()["event_id"]
        last = None
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_generating":
                    last = msg.get("output", {}).get("data", last)
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    if not msg.get("success", False):
                        return False, out.get("error") or json.dumps(out)[:500]
                    return True, out.get("data", last)
                if msg.get("msg") == "close_stream":
                    break
        return False, "stream closed without an answer"

    def close(self):
        self.http.close()
