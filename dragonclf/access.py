"""Who owns what, who may do what: the one permission check every UI handler and command calls.

The registry (`dragonclf.registry`, SQLite under the root) says, per dataset, its owner, its display
name, whether it is public, and who it is shared with (`read` or `edit`). A dataset the
registry does not know (the bundled demo, folders made by the CLI or by hand) belongs
to the deployment: its admins and the local user. Models belong with their dataset;
one can be made public on its own so visitors may predict with it.

Folders: the local user's datasets keep today's names (`datasets/dragons`); anyone
else's carry their owner (`datasets/hf.alice--dragons`), so names are unique per owner.

`check(who, dataset, action)` is the rule book (actions in ACTIONS); it raises
`Denied`, a DragonError whose message says what the person can do instead.
Quotas live in `dragonclf.quotas`.
"""

from __future__ import annotations

import tempfile

from dragonclf import quotas
from dragonclf.errors import DragonError
from dragonclf.identity import Identity
from dragonclf.names import check_dataset_name
from dragonclf.registry import DEPLOYMENT, Registry, display_name, is_public, owner_of
from dragonclf.store import Store, list_datasets

ACTIONS = ("read", "edit", "train", "destroy", "share", "publish")
ROLES = ("read", "edit")
SIGN_IN = ("Sign in to create datasets, collect, import, edit or train; visitors can look at public datasets "
           "and predict with public models.")


class Denied(DragonError):
    """Not allowed for this person; the message says why and what they can do."""


# ---- the rule book --------------------------------------------------------------------

def role(who: Identity, name: str) -> str | None:
    """'owner', 'admin', 'edit', 'read' or None for `who` on dataset `name`."""
    owner = owner_of(name)
    if owner is not None and owner == who.id:
        return "owner"
    if who.is_admin:
        return "admin"
    shared = Registry.here().role_of(name, who.id) if owner is not None else None
    if shared:
        return shared
    return "read" if is_public(name) else None


def check(who: Identity, name: str, action: str) -> str:
    """Raise Denied unless `who` may do `action` on dataset `name`; return the dataset's folder name."""
    if action not in ACTIONS:
        raise DragonError(f"unknown action {action!r}")
    typed = name
    name = resolve(who, name)
    r = role(who, name)
    shown = display_name(name) if Registry.here().entry(name) else typed
    if r is None:
        raise Denied(f"No dataset named {shown!r} that you can open.")
    if r in ("owner", "admin"):
        if action == "destroy" and who.anonymous:
            raise Denied(f"Visitors cannot delete anything. {SIGN_IN}")
        if action == "publish" and not who.is_admin:
            raise Denied("Only the Space owner (an admin) can make datasets and models public; ask them.")
        return name
    if action == "read":
        return name
    if who.anonymous:
        raise Denied(f"{shown!r} is read-only for visitors. {SIGN_IN}")
    if r == "edit" and action in ("edit", "train"):
        return name
    if action in ("destroy", "share", "publish"):
        what = "rename, delete or empty the trash of" if action == "destroy" else action
        raise Denied(f"Only the owner of {shown!r} can {what} it.")
    raise Denied(f"{shown!r} is shared with you read-only: you can look at it and export it; "
                 "press 'Copy to my datasets' to edit or train on your own copy.")


def can(who: Identity, name: str, action: str) -> bool:
    try:
        check(who, name, action)
        return True
    except DragonError:
        return False


def resolve(who: Identity, name: str) -> str:
    """The folder name for what a person typed or picked: their own 'dragons' is 'hf.alice--dragons'."""
    name = check_dataset_name(name)
    if who.folder_prefix and not name.startswith(who.folder_prefix):
        own = who.folder_prefix + name
        datasets = list_datasets()
        if len(own) <= 64 and (own in datasets or name not in datasets):
            return own
    return name


def visible(who: Identity) -> list[tuple[str, str]]:
    """(caption, folder name) of every dataset `who` may open: their own first, then shared and public."""
    mine, others = [], []
    for name in list_datasets():
        r = role(who, name)
        if r is None:
            continue
        owner = owner_of(name)
        shown = display_name(name)
        if r == "owner" or (owner is None and r == "admin"):
            mine.append((shown + (" · public" if is_public(name) else ""), name))
        else:
            whose = (owner or "the Space").split(":", 1)[-1]
            tag = {"admin": "admin view", "edit": "shared, you can edit", "read": "read-only"}[r]
            others.append((f"{shown} · {whose} ({tag})", name))
    return mine + others


# ---- changes to ownership ---------------------------------------------------------

def create_dataset(who: Identity, display: str) -> Store:
    """A new dataset owned by `who`, named `display` (unique per owner)."""
    if who.anonymous:
        quotas.check_scratch(who)
    display = check_dataset_name(display)
    name = who.folder_prefix + display
    if len(name) > 64:
        raise DragonError(f"dataset name {display!r} is too long with your user name; choose a shorter one")
    if "--" in display and who.kind != "local":
        raise DragonError("dataset names cannot contain '--' (it separates owner and name in folder names)")
    reg = Registry.here()
    with reg.write_lock:
        if name in list_datasets():
            raise DragonError(f"You already have a dataset named {display!r}; pick it in the list, or choose another name.")
        store = Store.open(name, create=True)
        if who.kind != "local":
            reg.register(name, who.id, display)
    return store


def share(who: Identity, name: str, person: str, role_: str | None) -> str:
    """Share `name` with `person` ('hf:bob', 'user:bob' or a bare name) as 'read' or 'edit'; None unshares."""
    name = check(who, name, "share")
    if owner_of(name) is None:
        raise DragonError("This dataset belongs to the whole Space; copy it to your datasets to share a copy.")
    person = (person or "").strip()
    if not person:
        raise DragonError("Type who to share with (their user name).")
    if ":" not in person:
        person = f"{who.kind if who.kind in ('hf', 'user') else 'user'}:{person}"
    if person.startswith(("anon:", "local:")):
        raise DragonError("Share with a signed-in person (their user name).")
    reg = Registry.here()
    if role_ is None:
        reg.run("DELETE FROM shares WHERE dataset=? AND person=?", (name, person))
        return f"{display_name(name)!r} is no longer shared with {person.split(':', 1)[1]}."
    if role_ not in ROLES:
        raise DragonError(f"role {role_!r}: use one of {', '.join(ROLES)}")
    reg.run("INSERT OR REPLACE INTO shares(dataset, person, role) VALUES (?,?,?)", (name, person, role_))
    how = "can edit it" if role_ == "edit" else "can look at it (read-only)"
    return f"{person.split(':', 1)[1]} {how}."


def set_public(who: Identity, name: str, public: bool) -> str:
    name = check(who, name, "publish")
    reg = Registry.here()
    if reg.entry(name) is None:
        reg.register(name, DEPLOYMENT, name)
    reg.run("UPDATE datasets SET public=? WHERE name=?", (int(bool(public)), name))
    return f"{display_name(name)!r} is now {'public: anyone can look and predict' if public else 'private'}."


def set_model_public(who: Identity, dataset: str, model: str, public: bool) -> str:
    dataset = check(who, dataset, "publish")
    Registry.here().run("INSERT OR REPLACE INTO models(dataset, model, public) VALUES (?,?,?)",
                        (dataset, model, int(bool(public))))
    return f"Model {model} is now {'public' if public else 'private'}."


def check_model(who: Identity, dataset: str, model: str | None) -> str:
    """Predicting needs read access to the dataset, or a model made public."""
    try:
        return check(who, dataset, "read")
    except Denied:
        if model and Registry.here().run("SELECT 1 FROM models WHERE dataset=? AND model=? AND public=1",
                                         (check_dataset_name(dataset), model)):
            return dataset
        raise


def copy_dataset(who: Identity, name: str, new_display: str) -> Store:
    """Your own copy of a dataset you can read (its active images and labels)."""
    from dragonclf.dataset_export import export_dataset
    from dragonclf.importer import import_path

    src = Store.open(check(who, name, "read"))
    if who.anonymous:
        raise Denied(f"Visitors cannot copy datasets. {SIGN_IN}")
    quotas.check_room(who, len(src.images()))
    dest = create_dataset(who, new_display)
    with tempfile.TemporaryDirectory(prefix="dragonclf-copy-") as tmp:
        import_path(dest, export_dataset(src, tmp))
    return dest


