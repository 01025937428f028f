"""Who nginx's workers run as, and the one folder they may write in.

nginx started as root keeps its master as root (it binds the ports, reads the
configuration, writes the pid file) and runs its workers — the processes that
parse every request from the network — as another user. Those workers must
not run as root: a flaw in one would be a flaw with every right on the
machine. They run as an unprivileged user (`nobody` unless
`STAGEWISE_NGINX_USER` names another; a user of its own is better still, since
whatever else runs as that user can write what its workers write).

They write two things: their logs (reopened by path on every rotation of the
access log) and temporary files. Neither may be in the state directory, which
holds the API token, the state database and the instances' environments. So
each nginx gets a runtime folder outside it:

    /run/stagewise/nginx/                          root, 0711: no one else may list it
        <service>-<hash of the state folder>/      root:<workers' group>, 0710: the workers
                                                   may pass through, not list or create
            access.log, error.log                  the workers' user, 0600 (made by `AccessLog.make_log`)
            temp/                                  the workers' user, 0700 (made so by nginx itself)

Started as any other user, nginx runs its workers as that user, and the
runtime folder is the state folder itself, as before. What this module never
does: make anything of the state directory reachable by the workers' user.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from stagewise.errors import RouterConfigError
from stagewise.routers.nginx.config import Paths

USER_VARIABLE = "STAGEWISE_NGINX_USER"
"""Environment variable naming the user nginx's workers run as when nginx starts as root."""
DEFAULT_USER = "nobody"
"""What nginx itself falls back to; it exists on every Debian system."""
ROOT = Path("/run/stagewise/nginx")
"""Where the workers' folders live when nginx runs as root: /run is root's, cleared at boot."""


@dataclass(frozen=True)
class WorkerUser:
    """The unprivileged user and group nginx's workers run as."""

    name: str
    group: str
    uid: int
    gid: int

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid


def worker_user(name: str | None = None) -> WorkerUser | None:
    """Who the workers run as when this process (and so nginx's master) is root; None when it is not.

    `name` (else `STAGEWISE_NGINX_USER`, else nobody); RouterConfigError for a user this machine lacks, or root.
    """
    if os.geteuid() != 0:
        return None
    name = name or os.environ.get(USER_VARIABLE) or DEFAULT_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RouterConfigError(f"nginx's workers are to run as {name!r}, a user this machine does not have: "
                                f"set {USER_VARIABLE} to an unprivileged user that exists") from None
    if entry.pw_uid == 0:
        raise RouterConfigError(f"nginx's workers must not run as root ({name!r}): set {USER_VARIABLE} to an "
                                "unprivileged user")
    return WorkerUser(name=name, group=grp.getgrgid(entry.pw_gid).gr_name, uid=entry.pw_uid, gid=entry.pw_gid)


def folder_of(folder: Path, service: str, root: Path = ROOT) -> Path:
    """The workers' folder of the nginx whose state folder is `folder`: one per state folder, found again
    from it after a restart, named so a person sees whose it is."""
    digest = hashlib.sha256(os.fsencode(folder.absolute())).hexdigest()[:16]
    return root / f"{service}-{digest}"


def prepare(paths: Paths, user: WorkerUser) -> None:
    """Make the runtime folder as the module's notes draw it (again, if someone changed its modes)."""
    base = paths.runtime.parent
    for folder in (base.parent, base):
        if not folder.is_dir():
            folder.mkdir(mode=0o711, parents=True, exist_ok=True)
            os.chmod(folder, 0o711)  # the umask may have taken bits away
    paths.runtime.mkdir(mode=0o710, exist_ok=True)
    os.chown(paths.runtime, 0, user.gid)
    os.chmod(paths.runtime, 0o710)


def remove(paths: Paths) -> None:
    """Once nginx has stopped: keep its error log in the state folder, and remove the runtime folder."""
    if paths.runtime == paths.folder:
        return
    with contextlib.suppress(FileNotFoundError):
        shutil.copyfile(paths.error_log, paths.kept_error_log)
    shutil.rmtree(paths.runtime, ignore_errors=True)
