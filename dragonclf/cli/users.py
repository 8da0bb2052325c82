"""CLI for sign-in and fair use: add people to a user list, show and set quotas.

The CLI acts as the machine's owner (the local user): whoever has a shell on the
server owns the files anyway. Passwords are read from stdin (or a prompt), never
from the command line, where other users of the machine could see them.
"""

from __future__ import annotations

import getpass
import sys

from dragonclf import quotas
from dragonclf.cli import add_json_flag, emit
from dragonclf.errors import DragonError
from dragonclf.identity import LOCAL, add_user, check_username, hash_password


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise DragonError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_add(args) -> int:
    password = _password()
    if len(password) < 8:
        raise DragonError("a password needs at least 8 characters")
    if args.file:
        new = add_user(args.file, args.name, password)
        emit({"user": args.name, "file": args.file, "added": new}, args.json,
             lambda r: f"{'added' if r['added'] else 'changed the password of'} {r['user']} in {r['file']}")
    else:  # one line for the DRAGONCLF_USERS secret (lines separated by newlines or ';')
        print(f"{check_username(args.name)}:{hash_password(password)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("user", help="sign-in: add a person to a user list")
    s = p.add_subparsers(dest="user_command", required=True)
    a = s.add_parser("add", help="add (or change the password of) NAME; the password is read from stdin")
    a.add_argument("name")
    a.add_argument("--file", help="the user list (DRAGONCLF_USERS_FILE); without it, print a line for the "
                                  "DRAGONCLF_USERS secret")
    add_json_flag(a)
    a.set_defaults(func=cmd_add)

    p = sub.add_parser("quota", help="show or set the per-person limits of this deployment")
    s = p.add_subparsers(dest="quota_command", required=True)
    show = s.add_parser("show", help="every quota and its value")
    add_json_flag(show)
    show.set_defaults(func=lambda a: emit(quotas.current(), a.json))
    st = s.add_parser("set", help="set one quota")
    st.add_argument("key", choices=sorted(quotas.DEFAULTS))
    st.add_argument("value", type=int)
    st.set_defaults(func=lambda a: print(quotas.set_quota(LOCAL, a.key, a.value)) or 0)
