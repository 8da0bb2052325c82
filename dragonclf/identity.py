"""Who is asking: one `Identity` per request, and how a deployment says who may sign in.

Three ways in, chosen from the environment by `SignIn.from_env()`:

- a Hugging Face Space with `hf_oauth: true` ("Sign in with Hugging Face"): `hf:<username>`;
- a user list (names with salted scrypt hashes, from `DRAGONCLF_USERS_FILE` or the
  `DRAGONCLF_USERS` secret; `python -m dragonclf user add NAME` writes one), or the single
  `DRAGONCLF_USER` / `DRAGONCLF_PASSWORD` pair: `user:<name>`;
- a loopback run with none of these: the local user, who owns everything (`local:owner`).

Anyone else is `anon:<session>`. It fails closed: half a configuration, or a public bind
with no way to sign in, refuses to start with a message saying what is missing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from dragonclf.errors import DragonError

KINDS = ("local", "hf", "user", "anon")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,38}$")  # Hugging Face usernames fit this too
OAUTH_VARS = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL")
SCRYPT = dict(n=2**14, r=8, p=1)  # ~16 MB, ~50 ms per check: slow for guessing, fine for a sign-in


@dataclass(frozen=True)
class Identity:
    """A person (or an anonymous browser session) as the server sees them."""

    id: str  # "local:owner", "hf:alice", "user:bob", "anon:3fa9c2d1e0b4"
    name: str  # what the UI shows
    kind: str  # local | hf | user | anon
    is_admin: bool = False

    @property
    def anonymous(self) -> bool:
        return self.kind == "anon"

    @property
    def folder_prefix(self) -> str:
        """The prefix of this person's dataset folders ('' for the local user: today's layout)."""
        return "" if self.kind == "local" else f"{self.kind}.{self.id.split(':', 1)[1]}--"


LOCAL = Identity("local:owner", "you (local)", "local", is_admin=True)


def check_username(name: str) -> str:
    name = (name or "").strip()
    if not _NAME_RE.match(name) or ".." in name:
        raise DragonError(f"user name {name!r} is not allowed: letters, digits, '_', '-', '.', at most 39 characters")
    return name


# ---- passwords -------------------------------------------------------------------

def hash_password(password: str, salt: bytes | None = None) -> str:
    """'scrypt$n$r$p$<salt hex>$<hash hex>': a salted, slow hash of `password`."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt((password or "").encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


_DUMMY = "scrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 32


def parse_users(text: str, source: str) -> dict[str, str]:
    """'name:hash' lines (blank lines and '#' comments skipped) -> {name: hash}; bad lines are an error."""
    users = {}
    for n, line in enumerate(text.replace(";", "\n").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not stored.startswith("scrypt$"):
            raise DragonError(f"{source}, line {n}: write it as name:scrypt$... "
                              "(`python -m dragonclf user add NAME` writes one)")
        users[check_username(name)] = stored
    return users


def add_user(path: str | os.PathLike, name: str, password: str) -> bool:
    """Add or replace `name` in the user file at `path` (created 0600); True when it was new."""
    if not password or len(password) < 8:
        raise DragonError("a password needs at least 8 characters")
    path = Path(path)
    users = parse_users(path.read_text(), str(path)) if path.exists() else {}
    new = check_username(name) not in users
    users[name] = hash_password(password)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# dragonclf users: name:salted scrypt hash (python -m dragonclf user add NAME)\n")
        f.writelines(f"{u}:{h}\n" for u, h in sorted(users.items()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return new


# ---- the deployment's sign-in ------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class SignIn:
    """How people sign in to this deployment, and who administers it."""

    mode: str  # "local" (loopback, no sign-in), "users" (a user list), "oauth" (a Space), "anonymous" (public, read-only)
    public: bool  # reachable from other machines (a Space, or a non-loopback bind)
    users: dict[str, str] = field(default_factory=dict)  # name -> scrypt hash ("users" mode)
    admins: frozenset[str] = frozenset()  # identity ids, e.g. {"hf:alice", "user:bob"}
    space_author: str | None = None

    @classmethod
    def from_env(cls, server_name: str | None = None, env: dict | None = None) -> "SignIn":
        """Read the configuration; raise DragonError naming what is missing when it is half set."""
        env = os.environ if env is None else env
        on_space = bool(env.get("SPACE_ID"))
        host = server_name or env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1")
        public = on_space or not is_loopback(host)
        users = _users_from_env(env)
        author = env.get("SPACE_AUTHOR_NAME") or None
        admins = {a.strip() for a in env.get("DRAGONCLF_ADMINS", "").split(",") if a.strip()}
        admins = {a if ":" in a else f"{'hf' if on_space else 'user'}:{a}" for a in admins}
        oauth_set = [v for v in OAUTH_VARS if env.get(v)]
        if on_space:
            if len(oauth_set) != len(OAUTH_VARS) and not users:
                missing = ", ".join(v for v in OAUTH_VARS if not env.get(v))
                raise DragonError(f"This Space has no sign-in ({missing} not set): add `hf_oauth: true` to the "
                                  "README front matter (the platform then sets them), or give a user list in the "
                                  "DRAGONCLF_USERS secret. Refusing to start a public app without sign-in.")
            if author:
                admins.add(f"hf:{author}")
            mode = "users" if users and len(oauth_set) != len(OAUTH_VARS) else "oauth"
        elif users:
            mode = "users"
        elif public:
            if env.get("DRAGONCLF_PUBLIC_ANONYMOUS", "") not in ("1", "true", "yes"):
                raise DragonError(f"Listening on {host} (reachable from other machines) with no sign-in: set "
                                  "DRAGONCLF_USERS_FILE (python -m dragonclf user add NAME) or DRAGONCLF_USER and "
                                  "DRAGONCLF_PASSWORD, or DRAGONCLF_PUBLIC_ANONYMOUS=1 for a read-only app. "
                                  "Refusing to start.")
            mode = "anonymous"
        else:
            mode = "local"
        if len(users) == 1 and env.get("DRAGONCLF_USER"):  # the single pair: that person runs the deployment
            admins.add(f"user:{next(iter(users))}")
        return cls(mode, public, users, frozenset(admins), author)

    def check_password(self, username: str, password: str) -> bool:
        """For gradio's `auth=`: True when the user list has `username` with this password."""
        stored = self.users.get((username or "").strip())
        if stored is None:
            verify_password(password or "", _DUMMY)  # same time for unknown names
            return False
        return verify_password(password or "", stored)

    def identify(self, username: str | None = None, profile: dict | None = None,
                 session: str | None = None) -> Identity:
        """The identity of one request: a Hugging Face profile, a signed-in user, the local user, or anonymous."""
        if profile and self.mode == "oauth":
            name = check_username(profile.get("preferred_username") or "")
            ident = f"hf:{name}"
            return Identity(ident, profile.get("name") or name, "hf", ident in self.admins)
        if username and self.mode == "users" and username in self.users:
            ident = f"user:{username}"
            return Identity(ident, username, "user", ident in self.admins)
        if self.mode == "local":
            return LOCAL
        token = hashlib.sha256(f"anon|{session or ''}".encode()).hexdigest()[:12]
        return Identity(f"anon:{token}", f"visitor {token[:6]}", "anon", False)


def _users_from_env(env) -> dict[str, str]:
    user, password = env.get("DRAGONCLF_USER"), env.get("DRAGONCLF_PASSWORD")
    if bool(user) != bool(password):
        missing = "DRAGONCLF_PASSWORD" if user else "DRAGONCLF_USER"
        raise DragonError(f"DRAGONCLF_USER and DRAGONCLF_PASSWORD go together: {missing} is not set. "
                          "Set both (or neither). Refusing to start with half a login.")
    users: dict[str, str] = {}
    path = env.get("DRAGONCLF_USERS_FILE")
    if path:
        p = Path(path)
        if not p.is_file():
            raise DragonError(f"DRAGONCLF_USERS_FILE={path} does not exist: create it with "
                              "`python -m dragonclf user add NAME --file {path}`.")
        users.update(parse_users(p.read_text(), path))
        if not users:
            raise DragonError(f"DRAGONCLF_USERS_FILE={path} has no users: add one with "
                              f"`python -m dragonclf user add NAME --file {path}`.")
    if env.get("DRAGONCLF_USERS"):
        users.update(parse_users(env["DRAGONCLF_USERS"], "DRAGONCLF_USERS"))
    if user:
        users[check_username(user)] = hash_password(password)
    return users
