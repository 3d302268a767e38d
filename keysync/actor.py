"""Who is acting, as the audit trail and the runs table name them."""

from __future__ import annotations

import os
import pwd


def os_user() -> str:
    """Who ran the command, as the system names them, for the audit trail.

    By the process's user id, not ``$LOGNAME``/``$USER`` (which anyone can set); for
    root, ``$SUDO_USER`` adds who asked sudo for it (set by sudo; root could write the
    audit trail directly anyway).
    """
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a user id the passwd file does not know (a container)
        name = f"uid {uid}"
    via = os.environ.get("SUDO_USER") if uid == 0 else None  # set by sudo, trusted as root
    return f"{name}, by sudo from {via}" if via and via != name else name
