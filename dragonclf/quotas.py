"""Fair shares of one machine: per-person limits the Space owner sets, with defaults for a free CPU Space.

Admins (the Space owner, the local user) are not limited, except by the total number of
trainings. Every refusal is a `QuotaExceeded` (a DragonError) that says what to do.
Anonymous visitors get a scratch workspace only when `anon_images` > 0 (off by default:
a fresh public Space asks people to sign in before any write); it is deleted after
`anon_idle_minutes` without a visit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from dragonclf.registry import DEPLOYMENT, Registry, delete_dataset_files, owner_of
from dragonclf.errors import DragonError
from dragonclf.identity import Identity
from dragonclf.store import Store, list_datasets

DEFAULTS: dict[str, int] = {
    "images_per_person": 2000,  # active + trashed images over all of a person's datasets
    "disk_mb_per_person": 500,
    "anon_images": 0,  # > 0 gives visitors a scratch workspace of this many images
    "anon_idle_minutes": 120,  # a visitor's scratch workspace goes after this long without a visit
    "trainings_per_person": 1,  # at the same time
    "trainings_total": 2,  # at the same time, everyone together (admins included)
    "max_epochs_cpu": 10,
    "max_size_cpu": 256,  # image size (px) for fine-tuning without a GPU
    "collects_per_hour": 10,
}


class QuotaExceeded(DragonError):
    """A limit was reached; the message names it and says what to do."""


def get(key: str) -> int:
    rows = Registry.here().run("SELECT value FROM settings WHERE key=?", (f"quota:{key}",))
    return int(rows[0]["value"]) if rows else DEFAULTS[key]


def current() -> dict[str, int]:
    return {k: get(k) for k in DEFAULTS}


def set_quota(who: Identity, key: str, value: int) -> str:
    if not who.is_admin:
        raise QuotaExceeded("Only the Space owner (an admin) can change quotas.")
    if key not in DEFAULTS:
        raise DragonError(f"unknown quota {key!r}; known: {', '.join(DEFAULTS)}")
    value = int(value)
    if value < 0:
        raise DragonError(f"quota {key} cannot be negative")
    Registry.here().run("INSERT OR REPLACE INTO settings(key, value) VALUES (?,?)", (f"quota:{key}", str(value)))
    return f"{key} is now {value}."


# ---- images and disk -----------------------------------------------------------------

def owned(who: Identity) -> list[str]:
    return [n for n in list_datasets() if owner_of(n) == who.id]


def usage(who: Identity) -> dict:
    images = disk = 0
    for name in owned(who):
        s = Store.open(name).status()
        images += sum(s["labels"].values()) + s["trashed"]
        for dirpath, _, files in os.walk(Store.open(name).root):
            disk += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return {"images": images, "disk_mb": disk / 1e6}


def room(who: Identity) -> int | None:
    """How many more images `who` may store (None: no limit)."""
    if who.is_admin or who.kind == "local":
        return None
    limit = get("anon_images") if who.anonymous else get("images_per_person")
    used = usage(who)
    disk_limit = 50 if who.anonymous else get("disk_mb_per_person")
    if used["disk_mb"] >= disk_limit:
        return 0
    return max(0, limit - used["images"])


def check_room(who: Identity, adding: int = 1) -> int | None:
    """Raise QuotaExceeded when `who` cannot store `adding` more images; return the room left."""
    left = room(who)
    if left is None:
        return None
    if left <= 0 or adding > left:
        limit = get("anon_images") if who.anonymous else get("images_per_person")
        what = ("Sign in for a larger workspace, or" if who.anonymous else "Empty the trash or delete a dataset,")
        raise QuotaExceeded(f"Quota reached: {left} of your {limit} images left (or your disk share is used), "
                            f"and this would add {adding}. {what} ask the Space owner for a larger quota.")
    return left


def cap_per_class(who: Identity, per_class: int, n_classes: int) -> tuple[int, str]:
    """Images per class that fit `who`'s quota, and a note when that is fewer than asked."""
    left = check_room(who, 1)
    if left is None or left >= per_class * n_classes:
        return per_class, ""
    fits = max(1, left // max(1, n_classes))
    return fits, (f"Your quota has room for {left} more images: collecting {fits} per class, not {per_class}. "
                  "Empty the trash or delete a dataset to make room.")


def check_scratch(who: Identity) -> None:
    """Visitors get one scratch dataset, only when the Space owner allows it."""
    if get("anon_images") <= 0:
        raise QuotaExceeded("Visitors cannot create datasets on this Space: sign in first.")
    if owned(who):
        raise QuotaExceeded("Visitors get one scratch dataset; sign in for more.")


# ---- trainings -------------------------------------------------------------------

_running: dict[str, int] = {}
_running_lock = threading.Lock()


@contextlib.contextmanager
def training_slot(who: Identity):
    """Hold one of the training slots while training; refuse when the person's or the total limit is reached."""
    with _running_lock:
        mine, total = _running.get(who.id, 0), sum(_running.values())
        if total >= get("trainings_total"):
            raise QuotaExceeded(f"All {get('trainings_total')} training slots are busy; try again in a few "
                                "minutes (the quick model is fast, and you can train it as soon as a slot frees).")
        if not who.is_admin and mine >= get("trainings_per_person"):
            raise QuotaExceeded("You already have a training running; wait for it to finish or press Stop.")
        _running[who.id] = mine + 1
    try:
        yield
    finally:
        with _running_lock:
            _running[who.id] -= 1
            if not _running[who.id]:
                del _running[who.id]


def check_training(who: Identity, epochs: int | None, size: int | None, cuda: bool) -> None:
    """Epoch and image-size caps for fine-tuning on a CPU."""
    if who.is_admin or cuda:
        return
    if epochs and epochs > get("max_epochs_cpu"):
        raise QuotaExceeded(f"At most {get('max_epochs_cpu')} epochs on this CPU Space; lower Epochs and train "
                            "again (the quick model often matches a long fine-tune).")
    if size and size > get("max_size_cpu"):
        raise QuotaExceeded(f"At most {get('max_size_cpu')} px images on this CPU Space; lower Image size.")


# ---- collecting ------------------------------------------------------------------

def check_collect(who: Identity) -> None:
    """At most `collects_per_hour` collections per person; records this one."""
    if who.is_admin:
        return
    reg = Registry.here()
    hour_ago = time.time() - 3600
    with reg.write_lock:
        (n,) = reg.db.execute("SELECT COUNT(*) FROM usage WHERE person=? AND kind='collect' AND at>?",
                              (who.id, hour_ago)).fetchone()
        if n >= get("collects_per_hour"):
            raise QuotaExceeded(f"You started {n} collections in the last hour (the limit is "
                                f"{get('collects_per_hour')}): wait a while, then press Start again; "
                                "images already collected are kept.")
        reg.db.execute("INSERT INTO usage(person, kind, at) VALUES (?, 'collect', ?)", (who.id, time.time()))


def safesearch(who: Identity, asked: str, public: bool) -> str:
    """Visitors always search with safe search on; on a public deployment nobody but admins turns it off."""
    if who.anonymous:
        return "on"
    if public and not who.is_admin and asked == "off":
        return "moderate"
    return asked


# ---- visitors' scratch workspaces ------------------------------------------------

_last_sweep = [0.0]


def touch(who: Identity) -> None:
    """Note a visitor's visit; now and then, delete scratch workspaces idle too long."""
    if not who.anonymous:
        return
    reg = Registry.here()
    now = time.time()
    reg.run("INSERT OR REPLACE INTO sessions(person, last_seen) VALUES (?,?)", (who.id, now))
    if now - _last_sweep[0] > 60:
        _last_sweep[0] = now
        sweep_idle(now)


def sweep_idle(now: float | None = None) -> list[str]:
    """Delete visitors' datasets whose session was idle past `anon_idle_minutes`; return their names."""
    now = time.time() if now is None else now
    reg = Registry.here()
    limit = now - 60 * get("anon_idle_minutes")
    idle = [r["person"] for r in reg.run("SELECT person FROM sessions WHERE last_seen < ?", (limit,))]
    gone = []
    for person in idle:
        for r in reg.run("SELECT name FROM datasets WHERE owner=?", (person,)):
            if r["name"] and person != DEPLOYMENT:
                delete_dataset_files(r["name"])
                gone.append(r["name"])
        reg.run("DELETE FROM sessions WHERE person=?", (person,))
    return gone
