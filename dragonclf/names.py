"""Label and dataset names: what a person types -> a folder name that is safe.

A label keeps the display name a person typed ("Viserion 🐉", "grizzly bear");
its folder is a lower-case slug of it ("viserion", "grizzly_bear"). Names that
could reach outside the dataset, or that are invisible or empty, are refused.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from dragonclf.errors import DragonError

MAX_NAME = 64
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = {"con", "prn", "aux", "nul", "trash", "manifest"}  # Windows devices, our own


def clean_display(name: str) -> str:
    """Validate a display name and return it tidied (NFC, trimmed, inner spaces folded)."""
    if name is None:
        raise DragonError("a label name is required")
    text = unicodedata.normalize("NFC", str(name))
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise DragonError(f"label {name!r} has control or invisible characters; type a plain name")
    text = " ".join(text.split())
    if not text:
        raise DragonError("a label name cannot be empty")
    if text in (".", "..") or "/" in text or "\\" in text:
        raise DragonError(f"label {name!r} cannot contain '/' or '\\' or be '.' or '..'")
    if len(text) > MAX_NAME:
        raise DragonError(f"label {name[:20]!r}... is longer than {MAX_NAME} characters")
    return text


def folder_for(display: str) -> str:
    """The folder a (valid) display name maps to: lower-case letters, digits, _ and -."""
    text = unicodedata.normalize("NFKD", clean_display(display))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # é -> e
    slug = re.sub(r"[^\w-]+", "_", text.lower(), flags=re.UNICODE).strip("_-.")
    slug = re.sub(r"_+", "_", slug)[:MAX_NAME]
    if not slug:  # e.g. only emoji or symbols: a stable name from the text itself
        slug = "label_" + hashlib.sha1(display.encode()).hexdigest()[:8]
    if slug in _RESERVED:
        slug = f"{slug}_"
    return slug


class NameClash(DragonError):
    """A new display name whose folder already belongs to another label."""


def clash_message(display: str, folder: str, taken_by: str) -> str:
    return (f"label {display!r} would share the folder {folder!r} with the label {taken_by!r}; "
            f"use {taken_by!r} or choose another name")


# Files that travel beside images and are not images: attribution and our own manifests.
_DOC_STEMS = ("README", "LICENSE", "LICENCE", "ATTRIBUTION", "CREDITS", "COPYING", "NOTICE", "AUTHORS")
_OWN_FILES = ("manifest.csv", "manifest.sqlite", "manifest.sqlite-wal", "manifest.sqlite-shm")


def is_doc(name: str) -> bool:
    """README / LICENSE / ATTRIBUTION ... (any extension) and manifest files: kept aside, never imported."""
    return name.split(".")[0].upper() in _DOC_STEMS or name.lower() in _OWN_FILES


def dataset_folder_name(display: str) -> str:
    """A name as people type it ("fish vs tools") -> its folder name ("fish-vs-tools"), checked."""
    return check_dataset_name(re.sub(r"\s+", "-", (display or "").strip()))


def check_dataset_name(name: str) -> str:
    """Dataset names are folder names already: letters, digits, '_', '-', '.'."""
    name = (name or "").strip()
    if not _DATASET_RE.match(name) or name in (".", "..") or ".." in name:
        raise DragonError(
            f"dataset name {name!r} is not allowed: use letters, digits, '_', '-' or '.', "
            f"starting with a letter or digit, at most 64 characters"
        )
    return name


_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def check_model_id(model_id: str) -> str:
    """A model id is a folder name: no path separators, no glob characters, no '..'."""
    model_id = (model_id or "").strip()
    if not _MODEL_ID_RE.match(model_id) or ".." in model_id:
        raise DragonError(f"model {model_id[:80]!r} is not a model id (letters, digits, '_', '-', '.', '+')")
    return model_id
