"""One writer at a time: an OS file lock on ``<data>/keysync.lock``.

API::

    lock = RunLock.acquire(data_dir, run_id, db_path=None, purpose="run")  # RunError (exit 3)
    lock.stale          # LockHolder | None: what a dead holder had left in the file
    lock.release()      # also ``with RunLock.acquire(...) as lock: ...``
    RunLock.holder(data_dir) -> LockHolder | None   # who holds it now (None: free); read-only
    RunLock.left_in_file(data_dir) -> LockHolder | None  # what the file names, alive or not

Why ``fcntl.flock`` and not a pid file: the kernel releases a flock when the
holding process dies, however it dies (``kill -9``, power loss, OOM). So a lock
can never be held by a dead run, and "stale lock" detection reduces to reading
what the previous holder wrote into the file: a holder that released normally
truncated it, so text found there after we got the lock was left by a process
that died holding it. That leftover is logged (``lock.stale_cleared``) and
replaced.

The file is never deleted: unlinking a flock'ed file lets a second process lock
a new inode under the same name while the first still holds the old one.

Child processes must not inherit the descriptor (a forked child would keep the
lock alive after its parent died); the pipeline starts children with the
``forkserver`` method, and the descriptor is non-inheritable across ``exec``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from keysync.errors import RunError
from keysync.leftovers import pid_alive
from keysync.state import DB_NAME

LOCK_NAME = "keysync.lock"
_READ_RETRIES = 20  # a loser may read the file in the instant before the winner wrote it


@dataclass(frozen=True)
class LockHolder:
    """What a holder writes into the lock file, so that a loser can name it."""

    run_id: str
    pid: int
    started_at: str
    purpose: str = "run"

    def describe(self) -> str:
        what = "run" if self.purpose == "run" else self.purpose
        named = f"{what} {self.run_id}" if self.run_id else what
        return f"{named}, pid {self.pid}, started {self.started_at}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> LockHolder | None:
    try:
        data = json.loads(text)
        return LockHolder(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            started_at=str(data["started_at"]),
            purpose=str(data.get("purpose", "run")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _read_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace").strip()


class RunLock:
    """An acquired lock; ``release()`` (or leaving the ``with`` block) frees it."""

    def __init__(self, path: Path, fd: int, holder: LockHolder, stale: LockHolder | None) -> None:
        self.path = path
        self.holder_info = holder
        self.stale = stale
        self._fd: int | None = fd

    @classmethod
    def acquire(
        cls,
        data_dir: Path,
        run_id: str,
        *,
        db_path: Path | None = None,
        purpose: str = "run",
    ) -> RunLock:
        """Take the lock without waiting, or raise ``RunError`` naming who holds it."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        db = db_path or data_dir / DB_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _wait_for_holder_text(fd)
            os.close(fd)
            raise RunError(_held_message(holder, db)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            left = _read_text(fd)
            stale = (_parse(left) or LockHolder("unknown", 0, "unknown")) if left else None
            holder = LockHolder(run_id, os.getpid(), _now(), purpose)
            text = json.dumps(holder.__dict__).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        except OSError as exc:  # a full disk: the file it could not write, not a bare reason
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        except BaseException:
            os.close(fd)
            raise
        lock = cls(path, fd, holder, stale)
        if stale is not None:
            from keysync import logs

            logs.get_logger(stage="lock").warning(
                "lock.stale_cleared",
                path=str(path),
                stale_pid=stale.pid,  # ``pid`` is, as on every line, the process that logs
                stale_run_id=stale.run_id,
                detail=f"the lock left by {stale.describe()} (process gone) was cleared"
                + (
                    f"; whether its changes were made: `keysync audit --run {stale.run_id}`"
                    if stale.run_id.startswith("manual-")
                    else ""
                ),
            )
        return lock

    @staticmethod
    def holder(data_dir: Path) -> LockHolder | None:
        """Who holds the lock now, or None. Never touches the lock itself.

        (Testing the flock would take it for an instant, and a run starting at
        that instant would be refused.) A holder empties the file on release,
        so text naming a live process means a holder; text naming a dead one is
        what a killed run left behind, and the lock is free.
        """
        holder = RunLock.left_in_file(data_dir)
        if holder is None or not pid_alive(holder.pid):
            return None
        return holder

    @staticmethod
    def left_in_file(data_dir: Path) -> LockHolder | None:
        """What the lock file names now, live holder or dead one (a process killed while
        it held the lock, not yet cleared by the next holder); None if it is empty."""
        try:
            text = (data_dir / LOCK_NAME).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        return _parse(text.strip()) if text.strip() else None

    def release(self) -> None:
        """Empty the file (so the next holder sees a clean release) and unlock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _wait_for_holder_text(fd: int) -> LockHolder | None:
    for _ in range(_READ_RETRIES):
        holder = _parse(_read_text(fd))
        if holder is not None:
            return holder
        time.sleep(0.025)
    return None


def _held_message(holder: LockHolder | None, db: Path) -> str:
    if holder is None:
        return (
            f"another keysync process holds the lock on {db}; wait for it to finish "
            f"(see `keysync runs`)"
        )
    if holder.pid and not pid_alive(holder.pid):
        return (
            f"the lock on {db} is still held by a leftover process of {holder.describe()} "
            f"(pid {holder.pid} has ended); stop leftover keysync processes and retry"
        )
    a_run = holder.purpose == "run"  # only runs are in `keysync runs`
    return (
        f"another {'run' if a_run else 'keysync command'} "
        f"({holder.describe()}) holds the lock on {db}; wait for it to finish "
        f"{'(see `keysync runs`) ' if a_run else ''}or stop it with `kill {holder.pid}`"
    )
