"""A dataset root on a small filesystem fills up during a collect and while a model is saved."""

from __future__ import annotations

import hashlib
import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from dragonclf import modelstore
from dragonclf.errors import DragonError
from dragonclf.store import Store, close_all


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 3 MB tmpfs as DRAGONCLF_HOME (mounting needs root and a kernel that allows it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(r.stderr or r.stdout).strip()[:120]}): disk-full test skipped")
    monkeypatch.setenv("DRAGONCLF_HOME", str(mnt))
    yield mnt
    close_all(mnt)
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_a_full_disk_stops_with_a_message_damages_nothing_and_work_resumes_after_space_is_freed(small_disk):
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * 600_000)  # what the person will delete to make room
    s = Store.open("full", create=True)
    s.add_label("noise")
    stored, message = [], None
    for seed in range(400):
        try:
            r = s.ingest(noise_jpeg(seed), "noise")
        except DragonError as e:
            message = str(e)
            break
        assert r.outcome == "added"
        stored.append(r.image_id)
    assert message is not None and "full" in message and "free some space" in message.lower(), message
    assert len(stored) > 5
    for row in s.images():
        assert hashlib.sha256(row.path.read_bytes()).hexdigest() == row.sha256
    assert [r.id for r in s.images()] == stored
    assert not [p for p in (s.root / ".tmp").rglob("*.part")]
    # saving a model on the full disk: a message, and no half-written model anywhere
    with pytest.raises(DragonError, match="full"):
        with modelstore.staging("full", "m1") as tmp:
            (tmp / "model.onnx").write_bytes(b"\1" * 2_000_000)
            (tmp / "model.json").write_text("{}")
    assert modelstore.list_models("full") == [] and not list(modelstore.dataset_dir("full").glob(".tmp-*"))
    # the store reopens cleanly
    s.close()
    s = Store.open("full")
    assert [r.id for r in s.images()] == stored and s.check()["ok"]
    # space freed: work resumes
    filler.unlink()
    assert s.ingest(noise_jpeg(10_000), "noise").outcome == "added"
    with modelstore.staging("full", "m2") as tmp:
        (tmp / "model.onnx").write_bytes(b"\1" * 1000)
        (tmp / "model.json").write_text("{}")
    assert (modelstore.dataset_dir("full") / "m2" / "model.onnx").is_file()
    assert s.check()["ok"] and len(s.images()) == len(stored) + 1
