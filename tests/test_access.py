"""Who is who, who may do what, and fair shares: the library's rules without a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, jpeg_bytes
from dragonclf import access, quotas
from dragonclf.errors import DragonError
from dragonclf.identity import LOCAL, OAUTH_VARS, SignIn, add_user, hash_password, parse_users, verify_password
from dragonclf.registry import Registry
from dragonclf.store import Store, list_datasets

SPACE = {"SPACE_ID": "owner/dragonclf", "SPACE_AUTHOR_NAME": "owner", **{v: "x" for v in OAUTH_VARS}}
PAIR = {"DRAGONCLF_USER": "alice", "DRAGONCLF_PASSWORD": "alice-password"}


def people():
    """Alice and Bob signed in from a user list, Olga the admin, and an anonymous visitor."""
    users = "\n".join(f"{n}:{hash_password(n + '-password')}" for n in ("alice", "bob", "olga"))
    s = SignIn.from_env("127.0.0.1", {"DRAGONCLF_USERS": users, "DRAGONCLF_ADMINS": "olga"})
    return s, s.identify("alice"), s.identify("bob"), s.identify("olga"), s.identify(session="tab-1")


def add(store, n=3, label="cat", seed=0):
    if label not in [lab.display for lab in store.labels()]:
        store.add_label(label)
    for i in range(n):
        store.ingest(jpeg_bytes(((seed * 37 + i * 50) % 255, 80, 160 - i)), label)


# ---- identity ----------------------------------------------------------------------

def test_hugging_face_profiles_become_identities_and_the_space_author_is_admin():
    s = SignIn.from_env(env=SPACE)
    assert s.mode == "oauth" and s.public
    owner = s.identify(profile={"preferred_username": "owner", "name": "The Owner"})
    bob = s.identify(profile={"preferred_username": "bob", "name": "Bob B"})
    assert (owner.id, owner.name, owner.kind, owner.is_admin) == ("hf:owner", "The Owner", "hf", True)
    assert (bob.id, bob.is_admin, bob.folder_prefix) == ("hf:bob", False, "hf.bob--")
    anon = s.identify(profile=None, session="abc")
    assert anon.anonymous and anon.id.startswith("anon:") and not anon.is_admin
    assert s.identify(session="abc") == anon and s.identify(session="xyz") != anon
    # a password name means nothing on an OAuth Space, and a hostile profile name is refused
    assert s.identify(username="owner").anonymous
    with pytest.raises(DragonError):
        s.identify(profile={"preferred_username": "../etc"})


def test_local_loopback_run_is_the_local_owner_with_no_login():
    s = SignIn.from_env("127.0.0.1", {})
    assert (s.mode, s.public) == ("local", False)
    assert s.identify() == LOCAL and LOCAL.is_admin and LOCAL.folder_prefix == ""


def test_user_list_passwords_are_salted_and_checked():
    s, alice, bob, olga, anon = people()
    assert s.mode == "users" and s.check_password("alice", "alice-password")
    assert not s.check_password("alice", "bob-password") and not s.check_password("nobody", "x" * 10)
    assert (alice.id, alice.is_admin, olga.is_admin, anon.anonymous) == ("user:alice", False, True, True)
    h1, h2 = hash_password("same password"), hash_password("same password")
    assert h1 != h2 and verify_password("same password", h1) and not verify_password("same passworD", h1)
    assert "same password" not in h1


def test_the_user_command_writes_a_private_file_the_app_reads(tmp_path):
    path = tmp_path / "users.txt"
    out = subprocess.run([sys.executable, "-m", "dragonclf", "user", "add", "carol", "--file", str(path)],
                         input="carol-secret-1\n", capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert path.stat().st_mode & 0o077 == 0 and "carol-secret-1" not in path.read_text()
    s = SignIn.from_env("0.0.0.0", {"DRAGONCLF_USERS_FILE": str(path)})
    assert s.mode == "users" and s.public and s.check_password("carol", "carol-secret-1")
    assert add_user(path, "dave", "dave-secret-1") and set(parse_users(path.read_text(), "f")) == {"carol", "dave"}
    short = subprocess.run([sys.executable, "-m", "dragonclf", "user", "add", "eve", "--file", str(path)],
                           input="short\n", capture_output=True, text=True, cwd=REPO, timeout=120)
    assert short.returncode == 1 and "8 characters" in short.stderr


@pytest.mark.parametrize("env, says", [
    ({"DRAGONCLF_USER": "alice"}, "DRAGONCLF_PASSWORD is not set"),
    ({"DRAGONCLF_PASSWORD": "x" * 9}, "DRAGONCLF_USER is not set"),
    ({"SPACE_ID": "o/s", "OAUTH_CLIENT_ID": "x"}, "hf_oauth: true"),
    ({"DRAGONCLF_USERS_FILE": "/nonexistent/users"}, "does not exist"),
    ({"DRAGONCLF_USERS": "alice:plaintext"}, "name:scrypt$"),
])
def test_half_configured_sign_in_refuses_to_start_and_says_what_is_missing(env, says):
    with pytest.raises(DragonError, match=None) as e:
        SignIn.from_env("127.0.0.1", env)
    assert says in str(e.value)


def test_a_public_bind_without_sign_in_refuses_unless_asked_to_run_read_only():
    with pytest.raises(DragonError, match="Refusing to start"):
        SignIn.from_env("0.0.0.0", {})
    s = SignIn.from_env("0.0.0.0", {"DRAGONCLF_PUBLIC_ANONYMOUS": "1"})
    visitor = s.identify(username="alice", session="s")
    assert s.mode == "anonymous" and visitor.anonymous
    with pytest.raises(DragonError, match="sign in"):
        access.create_dataset(visitor, "mine")


def test_the_single_pair_is_the_deployment_admin():
    s = SignIn.from_env("127.0.0.1", PAIR)
    assert s.check_password("alice", "alice-password") and s.identify("alice").is_admin


# ---- ownership and the rule book ---------------------------------------------------

def test_people_see_and_touch_only_their_own_datasets():
    _, alice, bob, olga, anon = people()
    a = access.create_dataset(alice, "dragons")
    b = access.create_dataset(bob, "dragons")  # names are unique per owner only
    assert a.name == "user.alice--dragons" and b.name == "user.bob--dragons"
    assert [n for _, n in access.visible(alice) if n != "demo"] == [a.name]
    assert access.visible(alice)[0][0] == "dragons"
    assert access.check(alice, "dragons", "edit") == a.name and access.check(bob, "dragons", "edit") == b.name
    for action in access.ACTIONS:
        with pytest.raises(access.Denied, match="No dataset named"):
            access.check(bob, a.name, action)
        with pytest.raises(access.Denied):
            access.check(anon, a.name, action)
    assert {n for _, n in access.visible(olga)} >= {a.name, b.name}  # the admin sees everything
    assert access.check(olga, a.name, "destroy") == a.name


def test_sharing_read_only_and_as_collaborator():
    _, alice, bob, olga, anon = people()
    a = access.create_dataset(alice, "birds")
    with pytest.raises(access.Denied, match="No dataset named"):
        access.share(bob, a.name, "bob", "edit")
    access.share(alice, a.name, "bob", "read")
    assert access.check(bob, a.name, "read") == a.name
    for action in ("edit", "train", "destroy", "share"):
        with pytest.raises(access.Denied):
            access.check(bob, a.name, action)
    assert any("read-only" in cap for cap, n in access.visible(bob) if n == a.name)
    access.share(alice, a.name, "bob", "edit")
    assert access.can(bob, a.name, "edit") and access.can(bob, a.name, "train")
    assert not access.can(bob, a.name, "destroy")
    access.share(alice, a.name, "bob", None)
    assert not access.can(bob, a.name, "read")


def test_a_read_only_reader_trains_on_a_copy_of_their_own(tmp_path):
    _, alice, bob, _, _ = people()
    a = access.create_dataset(alice, "cats")
    add(a, 3, "cat")
    add(a, 2, "dog", seed=5)
    access.share(alice, a.name, "bob", "read")
    copy = access.copy_dataset(bob, a.name, "my-cats")
    assert copy.name == "user.bob--my-cats" and access.check(bob, "my-cats", "edit") == copy.name
    assert sorted(lab.display for lab in copy.labels()) == ["cat", "dog"] and len(copy.images()) == 5
    assert len(a.images()) == 5  # the original is untouched


def test_the_demo_is_public_read_only_and_admins_publish():
    _, alice, bob, olga, anon = people()
    assert "demo" in list_datasets()
    for who in (alice, anon):
        assert access.check(who, "demo", "read") == "demo"
        with pytest.raises(access.Denied):
            access.check(who, "demo", "edit")
    a = access.create_dataset(alice, "pets")
    with pytest.raises(access.Denied, match="Space owner"):
        access.set_public(alice, a.name, True)
    access.set_public(olga, a.name, True)
    assert access.can(anon, a.name, "read") and not access.can(anon, a.name, "edit")
    assert not access.can(anon, a.name, "destroy") and not access.can(bob, a.name, "edit")


def test_predicting_with_a_public_model_of_a_private_dataset():
    _, alice, bob, olga, anon = people()
    a = access.create_dataset(alice, "secret")
    with pytest.raises(access.Denied):
        access.check_model(anon, a.name, "m1")
    access.set_model_public(olga, a.name, "m1", True)
    assert access.check_model(anon, a.name, "m1") == a.name
    with pytest.raises(access.Denied):
        access.check_model(anon, a.name, "m2")  # only that model
    with pytest.raises(access.Denied):
        access.check(anon, a.name, "read")  # and not the images


def test_visitors_have_no_workspace_until_the_owner_allows_one_then_idle_ones_go():
    _, alice, _, olga, anon = people()
    with pytest.raises(quotas.QuotaExceeded, match="sign in"):
        access.create_dataset(anon, "scratch")
    quotas.set_quota(olga, "anon_images", 3)
    with pytest.raises(quotas.QuotaExceeded, match="admin"):
        quotas.set_quota(alice, "anon_images", 1000)
    s = access.create_dataset(anon, "scratch")
    assert access.check(anon, "scratch", "edit") == s.name and s.name.startswith("anon.")
    with pytest.raises(access.Denied, match="Visitors cannot delete"):
        access.check(anon, "scratch", "destroy")
    with pytest.raises(quotas.QuotaExceeded, match="one scratch"):
        access.create_dataset(anon, "another")
    quotas.touch(anon)
    assert quotas.sweep_idle() == []
    assert quotas.sweep_idle(now=10**11) == [s.name]
    assert s.name not in list_datasets() and not s.root.exists()


# ---- quotas ----------------------------------------------------------------------

def test_image_quota_is_reached_with_a_clear_message_and_others_are_unaffected():
    _, alice, bob, olga, _ = people()
    quotas.set_quota(olga, "images_per_person", 4)
    a = access.create_dataset(alice, "full")
    add(a, 4)
    with pytest.raises(quotas.QuotaExceeded, match="Quota reached: 0 of your 4 images left") as e:
        quotas.check_room(alice, 1)
    assert "Empty the trash or delete a dataset" in str(e.value)
    assert len(a.images()) == 4  # nothing stored was harmed
    assert quotas.check_room(bob, 4) == 4 and quotas.check_room(olga, 10**6) is None


def test_training_slots_per_person_and_in_total():
    _, alice, bob, olga, _ = people()
    with quotas.training_slot(alice):
        with pytest.raises(quotas.QuotaExceeded, match="already have a training"):
            with quotas.training_slot(alice):
                pass
        with quotas.training_slot(bob):
            with pytest.raises(quotas.QuotaExceeded, match="training slots are busy"):
                with quotas.training_slot(olga):
                    pass
    with quotas.training_slot(alice):  # freed again
        pass
    with pytest.raises(quotas.QuotaExceeded, match="At most 10 epochs"):
        quotas.check_training(alice, 100, 224, cuda=False)
    quotas.check_training(alice, 100, 224, cuda=True)
    quotas.check_training(olga, 100, 512, cuda=False)


def test_collect_rate_and_safe_search():
    _, alice, bob, olga, anon = people()
    quotas.set_quota(olga, "collects_per_hour", 2)
    quotas.check_collect(alice)
    quotas.check_collect(alice)
    with pytest.raises(quotas.QuotaExceeded, match="wait a while"):
        quotas.check_collect(alice)
    quotas.check_collect(bob)  # others are unaffected
    assert quotas.safesearch(anon, "off", public=True) == "on"
    assert quotas.safesearch(alice, "off", public=True) == "moderate"
    assert quotas.safesearch(olga, "off", public=True) == "off"
    assert quotas.safesearch(LOCAL, "off", public=False) == "off"


# ---- the journal knows who ---------------------------------------------------------

def test_undo_walks_the_callers_own_changes():
    _, alice, bob, _, _ = people()
    store = access.create_dataset(alice, "shared")
    add(store, 4)
    store.add_label("dog")
    ids = [r.id for r in store.images()]
    store.apply([access_decision(ids[0], "trash")], actor=alice.id)
    store.apply([access_decision(ids[1], "relabel", "dog")], actor=bob.id)
    res = store.undo(actor=alice.id)  # Alice's undo skips Bob's later edit
    assert res.changed == [ids[0]] and store.image(ids[1]).label == "dog"
    assert store.image(ids[0]).status == "active"
    with pytest.raises(DragonError, match="nothing to undo"):
        store.undo(actor=alice.id)
    assert store.redo(actor=alice.id).changed == [ids[0]]
    who = {h["image_id"]: h["actor"] for h in store.history() if h["action"] in ("trash", "relabel")}
    assert who == {ids[0]: alice.id, ids[1]: bob.id}


def access_decision(image_id, action, label=None):
    from dragonclf.journal import Decision

    return Decision(image_id, action, label)


def test_registry_lives_under_the_root(home):
    assert Registry.here().path == home / "access.sqlite"
    Store.open("plain", create=True)
    assert access.check(LOCAL, "plain", "destroy") == "plain"  # the local user owns what has no owner


def test_the_app_refuses_to_start_half_configured_or_public_without_sign_in(tmp_path):
    """As `python app.py` runs it: launch_options() stops the process with the message, before serving."""
    base = {k: v for k, v in __import__("os").environ.items()
            if not k.startswith(("DRAGONCLF_USER", "SPACE_", "OAUTH_", "GRADIO_SERVER"))}
    base.update(DRAGONCLF_HOME=str(tmp_path), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    code = "import app; app.launch_options(); print('STARTED')"
    for extra, says in (({"DRAGONCLF_USER": "alice"}, "DRAGONCLF_PASSWORD is not set"),
                        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, "Refusing to start")):
        out = subprocess.run([sys.executable, "-c", code], env={**base, **extra}, cwd=REPO, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 1 and "STARTED" not in out.stdout and says in out.stderr, out.stderr[-500:]
        assert "Traceback" not in out.stderr
