"""Start-up hook for the distributed tests: watches what ranks other than 0 do to the store.

Python imports `sitecustomize` at start-up when this folder is on PYTHONPATH.
With DRAGONCLF_RANK_AUDIT set, a process whose RANK is not 0 records, through
an audit hook (PEP 578: it observes, it changes nothing), every file it opens
for writing, creates, renames or deletes under DRAGONCLF_HOME, every SQLite
database it opens there, and every file it reads there. The test reads the log.
"""

import os
import sys


def _install() -> None:
    out, home, rank = os.environ.get("DRAGONCLF_RANK_AUDIT"), os.environ.get("DRAGONCLF_HOME"), os.environ.get("RANK")
    if not (out and home and rank) or rank == "0":
        return
    home = os.path.realpath(home) + os.sep
    log = open(os.path.join(out, f"rank{rank}.log"), "a", buffering=1)  # opened before the hook exists
    log.write(f"start pid={os.getpid()}\n")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    busy = []  # the hook's own os calls must not re-enter it

    def inside(path) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        p = os.path.abspath(os.fsdecode(path))
        return p if (p + os.sep).startswith(home) or p.startswith(home) else None

    def hook(event, args):
        if busy or event not in ("open", "sqlite3.connect", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                                 "shutil.rmtree", "shutil.move", "os.truncate", "os.chmod", "os.utime"):
            return
        busy.append(1)
        try:
            if event == "open":
                path, mode, flags = args
                p = inside(path)
                if p is None:
                    return
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                          (isinstance(flags, int) and flags & write_flags)
                log.write(f"{'WRITE' if writing else 'read'} {p}\n")
            elif event == "sqlite3.connect":
                p = inside(args[0])
                if p is not None:
                    log.write(f"WRITE sqlite3.connect {p}\n")  # even a reader of a WAL database writes its -shm
            else:
                for a in args[:2]:
                    p = inside(a) if isinstance(a, (str, bytes, os.PathLike)) else None
                    if p is not None:
                        log.write(f"WRITE {event} {p}\n")
        finally:
            busy.pop()

    sys.addaudithook(hook)


_install()
