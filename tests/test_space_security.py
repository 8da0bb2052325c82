"""Space readiness and what the server will and will not hand out."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from app_fixtures import free_port
from conftest import REPO
from dragonclf.store import Store


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_file_routes_refuse_everything_the_app_did_not_hand_out(app_url, home, client):
    demo = Store.open("demo")
    secrets = [
        "/etc/passwd",
        str(demo.db_path),  # the manifest
        str(REPO / "app.py"),
        str(REPO / "dragonclf" / "store.py"),
        str(REPO / ".git" / "config"),
        str(REPO / ".env"),
        str(demo.images()[0].path),  # an image, but not one the app served
        "../../../../etc/passwd",
        str(home),
    ]
    for path in secrets:
        for route in ("gradio_api/file=", "file="):
            for quoted in (path, urllib.parse.quote(path, safe="")):
                assert http_status(app_url + route + quoted) in (400, 403, 404, 405), (route, path)


def test_images_the_app_shows_are_served(app_url, client, home):
    gallery = client.predict("demo", "tools", api_name="/label_gallery")
    assert len(gallery) == 39
    url = gallery[0]["image"]["url"]
    assert url.startswith(app_url) and http_status(url) == 200


def test_emptied_trash_is_no_longer_served_whoever_emptied_it(app_url, client, home):
    """Deleted means gone: a picture the browser was shown is not downloadable once the trash is emptied,
    by the app (at once) or by another process (the CLI; gone at the next scheduled sweep)."""
    from ui import serving

    demo = Store.open("demo")
    gallery = client.predict("demo", "tools", api_name="/label_gallery")
    # a served file is named <folder hash>-<image id>.jpg (captions name the picture, not its id)
    urls = {item["image"]["url"].rsplit("/", 1)[-1].split("-", 1)[1].rsplit(".", 1)[0]: item["image"]["url"]
            for item in gallery[:2]}
    (first, url1), (second, url2) = urls.items()
    assert http_status(url1) == 200 and http_status(url2) == 200
    demo.trash([first])
    assert http_status(url1) == 200  # in the trash: restorable, still the same picture
    client.predict("demo", True, "trash", api_name="/empty_trash")
    assert http_status(url1) in (403, 404)
    demo.trash([second])
    subprocess.run([sys.executable, "-m", "dragonclf", "empty-trash", "--dataset", "demo", "--yes"], check=True, capture_output=True,
                   env={**os.environ, "DRAGONCLF_HOME": str(home)}, cwd=REPO)
    assert serving.sweep() >= 1 and http_status(url2) in (403, 404)
    assert serving.sweeper_running()  # the same sweep runs on a schedule


def test_hostile_dataset_names_through_the_ui_are_refused(client, home):
    from gradio_client.exceptions import AppError

    before = sorted(p.name for p in (home / "datasets").iterdir()) if (home / "datasets").exists() else []
    outside = home.parent / "escaped"  # an absolute path outside the root that no other process owns
    for bad in ("../../etc", str(outside), "..", "a/../../b"):
        with pytest.raises(AppError):
            client.predict(bad, api_name="/create_dataset")
    after = sorted(p.name for p in (home / "datasets").iterdir()) if (home / "datasets").exists() else []
    assert after == before  # nothing created, inside the root or out of it
    assert not any((home.parent / n).exists() for n in ("etc", "b", "x"))
    assert not outside.exists()


def test_hostile_label_names_through_the_ui_stay_inside_the_dataset(client, home, photo_files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    Store.open("labels", create=True)
    photo = handle_file(str(photo_files["tools"][0]))
    for bad in ("../../escape", "/etc", "..", ".", "a/b", "tab\tname"):
        with pytest.raises(AppError):
            client.predict("labels", [photo], bad, api_name="/import_files")
    store = Store.open("labels")
    assert store.labels() == [] and store.images(status=None) == []
    assert sorted(p.name for p in home.rglob("*") if "escape" in p.name) == []
    # An odd but harmless name works, and lands in a folder inside the dataset.
    client.predict("labels", [photo], "Viserion 🐉 (the white one)", api_name="/import_files")
    (label,) = Store.open("labels").labels()
    assert label.display == "Viserion 🐉 (the white one)"
    assert (store.root / label.folder).resolve().parent == store.root.resolve()


def test_uploads_over_the_size_limit_are_refused(app_url):
    import httpx

    big = b"\xff\xd8" + b"\0" * (51 * 1024 * 1024)  # just over the 50 MB limit
    r = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")}, timeout=60)
    assert r.status_code == 413, r.text[:200]
    assert "maximum allowed size" in r.text and str(50 * 1024 * 1024) in r.text  # says why, names the limit
    small = httpx.post(app_url + "gradio_api/upload", files={"files": ("ok.jpg", b"\xff\xd8" + b"\0" * 1000)},
                       timeout=60)
    assert small.status_code == 200


def wait_for_port(port: int, proc, timeout=120) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError("app did not start")


@pytest.mark.parametrize("persistent", [True, False])
def test_runs_as_a_space(tmp_path, persistent):
    """SPACE_ID and PORT set, as on Hugging Face: bind 0.0.0.0:$PORT, keep data under /data when mounted."""
    data = tmp_path / "data"
    if persistent:
        data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DRAGONCLF_HOME"}
    env.update(SPACE_ID="someone/dragonclf", PORT=str(port), DRAGONCLF_PERSISTENT_DIR=str(data),
               SPACE_AUTHOR_NAME="someone", SPACE_HOST="127.0.0.1", SYSTEM="spaces", OAUTH_CLIENT_ID="x", OAUTH_CLIENT_SECRET="x",
               OAUTH_SCOPES="openid profile", OPENID_PROVIDER_URL="http://127.0.0.1:9",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    code = ("import app, dragonclf.config as c; print('HOME', c.home(), flush=True); "
            "print('OPTS', app.launch_options(), flush=True); print('NOTE', repr(app.dataset_bar.storage_note()), flush=True)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line[:4] in ("HOME", "OPTS", "NOTE"))
    assert "'server_name': '0.0.0.0'" in lines["OPTS"] and f"'server_port': {port}" in lines["OPTS"]
    if persistent:
        assert lines["HOME"] == str(data / "dragonclf") and lines["NOTE"] == "''"
    else:
        assert lines["HOME"] == str(REPO) and "lost when it restarts" in lines["NOTE"]
    if persistent:  # and it really serves, on all interfaces
        proc = subprocess.Popen([sys.executable, "app.py"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_port(port, proc)
            assert http_status(f"http://127.0.0.1:{port}/") == 200
            import psutil

            listening = [c for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"]
            assert any(c.laddr.ip in ("0.0.0.0", "::") and c.laddr.port == port for c in listening)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_local_run_binds_loopback_only(monkeypatch):
    import app

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    opts = app.launch_options()
    assert opts["server_name"] == "127.0.0.1" and opts["server_port"] == 7860 and opts["max_file_size"]
    assert "auth" not in opts  # the local user: no login screen
    monkeypatch.setenv("DRAGONCLF_USER", "me")
    monkeypatch.setenv("DRAGONCLF_PASSWORD", "secret-pw")
    check = app.launch_options()["auth"]  # a check against a salted hash, not the pair itself
    assert check("me", "secret-pw") and not check("me", "secret") and not check("you", "secret-pw")


def test_space_front_matter_matches_the_pinned_requirements():
    """A Space builds from README's front matter and requirements.txt: they must agree."""
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    front = dict(line.split(": ", 1) for line in text.split("---\n")[1].splitlines() if ": " in line)
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert front["sdk"] == "gradio"
    assert front["sdk_version"] == pins["gradio"]
    assert (REPO / front["app_file"]).is_file()
    assert front["python_version"].strip('"') == f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in ("torch", "torchvision", "fastai", "timm", "ddgs", "pillow", "onnxruntime"):
        assert name in pins, f"{name} is not pinned in requirements.txt"
