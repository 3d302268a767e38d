"""Structured logs for every keysync process: configured here, written by the parent alone.

Why it is built this way:

- structlog is configured in this module only. Every event becomes one flat dict
  (``timestamp``, ``level``, ``event``, ``run_id``, ``pid``, ``stage``, then its own
  fields) encoded once with msgspec. Exceptions become a structured ``exception`` field,
  so no event is ever more than one line, on stderr or in the file.
- The parent process is the only writer of the JSON Lines file: one ``write()`` of a
  complete line per event, with ``O_APPEND``, so a collector tailing the file never sees
  a torn or interleaved line. Before each write the path is compared with the open file
  (device and inode, as ``logging.handlers.WatchedFileHandler`` does): when a rotation
  tool has moved or deleted it, the file is reopened.
- Worker processes do not write the file. They send each event to the parent over one
  pipe shared by all workers (``LogRelay``). Each frame is written with a single
  ``write()`` of at most ``PIPE_BUF`` bytes, which POSIX makes atomic for pipes: frames of
  different workers never interleave, and a worker killed mid-send leaves a whole frame or
  nothing. No lock is shared between processes, so a dead worker cannot block the others.
  (``multiprocessing.Queue``/``SimpleQueue`` hold a cross-process lock while writing, which
  a ``kill -9`` leaves held forever, and ``Queue`` loses what its feeder thread had not
  flushed yet.) An event larger than one frame is sent as numbered chunks and reassembled
  by the parent; a worker that dies between chunks loses only that event, and the parent
  says so (``log.event_lost``).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TextIO, cast

import msgspec
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from keysync.errors import ConfigError, RunError, bytes_shown
from keysync.log_events import EVENTS, EventSpec

__all__ = [
    "EVENTS",
    "LEVELS",
    "EventSpec",
    "LogQueue",
    "LogRelay",
    "bind_run",
    "effective_level",
    "exception_fields",
    "get_logger",
    "render_console",
    "setup_logging",
    "setup_worker_logging",
    "shutdown_logging",
    "unbind_run",
]

LEVELS: Final[dict[str, int]] = {
    "debug": 10,
    "info": 20,
    "warning": 30,
    "error": 40,
    "critical": 50,
}
_LEVEL_NAMES: Final[dict[int, str]] = {number: name for name, number in LEVELS.items()}
_MAX_FRAMES: Final = 20  # innermost frames kept per exception
_MAX_CAUSES: Final = 3  # depth of __cause__/__context__ chains kept


# ----------------------------------------------------------------- rendering helpers

_ts_cache: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """RFC 3339 UTC with microseconds; the seconds part is cached (it is the costly one)."""
    global _ts_cache
    now = time.time()
    second = int(now)
    cached_second, prefix = _ts_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _ts_cache = (second, prefix)
    return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"


def _json_fallback(obj: Any) -> Any:
    """Types msgspec cannot encode (paths, custom objects) are logged as their text."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_json_fallback)
_DECODER: Final = msgspec.json.Decoder()


def _encode_line(event: Mapping[str, Any]) -> bytes:
    """One event as one JSON line. Never raises: a value that cannot be encoded is shown."""
    try:
        return _ENCODER.encode(event) + b"\n"
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        # Only the values that fail are shown as their repr: a number stays a number.
        return _ENCODER.encode({key: _encodable(value) for key, value in event.items()}) + b"\n"


def _encodable(value: Any) -> Any:
    try:
        _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return _mended(repr(value))
    return value


def exception_fields(exc_info: Any) -> dict[str, Any] | None:
    """An exception as a dict: ``type``, ``message``, ``frames`` (``file:line in func``),
    and ``cause`` for a chained exception. ``exc_info`` is what logging APIs accept:
    ``True`` (the exception being handled), an exception, or a ``sys.exc_info()`` tuple."""
    exc: BaseException | None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    elif exc_info:
        exc = sys.exc_info()[1]
    else:
        exc = None
    return None if exc is None else _describe_exception(exc, 0)


def _describe_exception(exc: BaseException, depth: int) -> dict[str, Any]:
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    summary = traceback.extract_tb(exc.__traceback__)[-_MAX_FRAMES:]
    described: dict[str, Any] = {
        "type": name,
        "message": str(exc),
        "frames": [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in summary],
    }
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and depth < _MAX_CAUSES:
        described["cause"] = _describe_exception(cause, depth + 1)
    return described


_COLORS: Final[dict[str, str]] = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_RESET: Final = "\x1b[0m"
_BOLD: Final = "\x1b[1m"
_DIM: Final = "\x1b[2m"
_CONSOLE_SKIP: Final = frozenset({"timestamp", "level", "event", "pid"})
_PLAIN_UNSAFE: Final = frozenset(' \t\r\n"=\\\x1b')


# Characters of one value on a console line; the file keeps all. A warning or an error
# says what to do at its end (`keysync registry rekey` carries the approvals over), so
# it keeps ten times as much: the cut is for runaway values, not for advice.
_CONSOLE_MAX: Final = 200
_CONSOLE_MAX_PROBLEM: Final = 2000


def _console_value(value: Any, limit: int = _CONSOLE_MAX) -> str:
    """A value on one console line: bare when unambiguous, JSON otherwise; long ones cut."""
    value = _mended(value)  # the console sink may be handed events from other processes
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit] + "…"
    if isinstance(value, str):
        if value and not any(char in _PLAIN_UNSAFE or not char.isprintable() for char in value):
            return value
        return _ENCODER.encode(value).decode()
    if isinstance(value, dict) and "type" in value and "message" in value and "frames" in value:
        where = f" ({value['frames'][-1]})" if value["frames"] else ""
        return _ENCODER.encode(f"{value['type']}: {value['message']}{where}").decode()
    return _encode_line(value)[:-1].decode() if not isinstance(value, bool) else str(value).lower()


def render_console(event: Mapping[str, Any], colors: bool = False) -> str:
    """The human-readable line: ``2026-11-28T00:10:00Z info     run.started  mode=full``.

    Always exactly one line (newlines inside values are escaped); colours only on request."""
    stamp = str(event.get("timestamp", ""))
    if len(stamp) > 19 and stamp.endswith("Z"):
        stamp = stamp[:19] + "Z"  # seconds are enough for a reader; the file keeps µs
    level = str(event.get("level", ""))
    name = str(event.get("event", ""))
    limit = _CONSOLE_MAX if LEVELS.get(level, 0) < LEVELS["warning"] else _CONSOLE_MAX_PROBLEM
    pairs = [
        f"{key}={_console_value(value, limit)}"
        for key, value in event.items()
        if key not in _CONSOLE_SKIP and value is not None
    ]
    if colors:
        color = _COLORS.get(level, "")
        pairs = [f"{_DIM}{pair.split('=', 1)[0]}={_RESET}{pair.split('=', 1)[1]}" for pair in pairs]
        head = f"{_DIM}{stamp}{_RESET} {color}{level:<8}{_RESET} {_BOLD}{name}{_RESET}"
    else:
        head = f"{stamp} {level:<8} {name}"
    return head + ("  " + " ".join(pairs) if pairs else "") + "\n"


# ----------------------------------------------------------------------------- sinks


class _Sink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...


class _JsonLinesFile:
    """The log file: append-only, one write per line, reopened after an external rotation.

    A line cut short (the disk filled up in the middle of it; the process that wrote
    it stopped logging to the file then) is ended with a newline before the next
    line, so that the cut line is the only one a collector cannot read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._identity: tuple[int, int] = (-1, -1)
        self._cut_short = False
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        status = os.fstat(fd)
        self._fd, self._identity = fd, (status.st_dev, status.st_ino)
        self._cut_short = status.st_size > 0 and _last_byte(self.path) != b"\n"

    def _rotated(self) -> bool:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (status.st_dev, status.st_ino) != self._identity

    def write(self, line: bytes) -> None:
        if self._rotated():
            self.close()
            self._open()
        if self._cut_short:
            line = b"\n" + line
        view = memoryview(line)
        while view:  # a regular file takes it in one write; loop only for safety
            written = os.write(self._fd, view)
            view = view[written:]
        self._cut_short = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _last_byte(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1)
    except OSError:
        return b"\n"  # unreadable (write-only): nothing to mend


# Routine events the console shows only with -v (see ``EventSpec.console``).
_FILE_ONLY_AT_INFO: Final = frozenset(name for name, spec in EVENTS.items() if not spec.console)


class _ParentSink:
    """Sinks of the parent process: the JSON Lines file and stderr, behind one lock.

    The lock serialises the main thread and the relay thread (worker events). It is
    re-entrant so that a signal handler logging in the middle of a write cannot deadlock;
    each line is still one ``write()``, so lines never mix."""

    def __init__(
        self,
        *,
        file: _JsonLinesFile | None,
        file_level: int,
        stderr_level: int,
        stderr_format: str,
        stream: TextIO | None,
        colors: bool,
        tty: bool = False,
    ) -> None:
        self.file = file
        self.file_level = file_level
        self.stderr_level = stderr_level
        self.stderr_json = stderr_format == "json"
        self.console_detail = stderr_level <= LEVELS["debug"]  # -v: every event on the console
        self.stream = stream
        self.colors = colors
        # On a terminal a console line first clears the line it lands on: a progress line
        # drawn with "\r" is overwritten instead of being glued in front of the event.
        self.clear = "\r\x1b[K" if tty and stderr_format == "console" else ""
        self._lock = threading.RLock()
        self._file_broken = False

    def emit(self, event: dict[str, Any]) -> None:
        levelno = LEVELS.get(event["level"], 20)
        self.write(levelno, _encode_line(event), event)

    def write(self, levelno: int, line: bytes, event: dict[str, Any] | None) -> None:
        """Write one encoded line (and its dict, when the caller has it) to every sink."""
        with self._lock:
            if self.file is not None and levelno >= self.file_level and not self._file_broken:
                try:
                    self.file.write(line)
                except OSError as exc:
                    # The run goes on; the user is told once, on stderr, what broke: as
                    # JSON too when stderr is JSON, for the collector reading it.
                    self._file_broken = True
                    reason = f"{exc.strerror or exc}; file logging stopped"
                    if self.stderr_json:
                        failed: dict[str, Any] = {
                            "timestamp": _timestamp(),
                            "level": "warning",
                            "event": "log.file_failed",
                        }
                        if _state.run_id is not None:
                            failed["run_id"] = _state.run_id
                        failed |= dict(pid=os.getpid(), stage="logs")
                        failed |= {"path": str(self.file.path), "reason": reason}
                        self._to_stderr(_encode_line(_mended(failed)).decode())
                    else:
                        self._to_stderr(
                            f"keysync: warning: cannot write log file {self.file.path}: {reason}\n"
                        )
            if levelno >= self.stderr_level:
                if self.stderr_json:
                    self._to_stderr(line.decode("utf-8", "replace"))
                else:
                    if event is None:
                        event = _DECODER.decode(line)
                    if self.console_detail or event.get("event") not in _FILE_ONLY_AT_INFO:
                        self._to_stderr(self.clear + render_console(event, self.colors))

    def _to_stderr(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed (e.g. a pipe whose reader went away): the file still has it

    def close(self) -> None:
        with self._lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class _WorkerSink:
    """Sink of a worker process: each event goes to the parent through the ``LogQueue``."""

    def __init__(self, queue: LogQueue) -> None:
        self.queue = queue

    def emit(self, event: dict[str, Any]) -> None:
        self.queue.put(LEVELS.get(event["level"], 20), _encode_line(event))


class _State:
    """What the process-wide configuration decided."""

    sink: _Sink
    min_level: int = LEVELS["info"]
    run_id: str | None = None  # fallback for threads that do not share the contextvars
    stage: str | None = None  # a worker's stage, set once per process
    configured: bool = False  # setup_logging ran (not only the import-time default)
    last_run_id: str = ""  # the run this process ran last: a failed `keysync run` names it


_state = _State()


# ------------------------------------------------------------------ structlog glue


def _finalize(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """The one processor doing the work: head fields first, plain values, exception dict."""
    event: dict[str, Any] = {
        "timestamp": _timestamp(),
        "level": method_name,  # _Logger proxies under the level's own name
        "event": str(event_dict.pop("event", "")),
    }
    run_id = event_dict.pop("run_id", None) or _state.run_id
    if run_id is not None:
        event["run_id"] = run_id
    event["pid"] = os.getpid()
    stage = event_dict.pop("stage", None) or _state.stage
    if stage is not None:
        event["stage"] = stage
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("stack_info", None)
    for key, value in event_dict.items():
        event[key] = _mended(value)
    if exc_info:
        described = exception_fields(exc_info)
        if described is not None:
            event["exception"] = _mended(described)
    return (event,), {}


def _mended(value: Any) -> Any:
    r"""``value`` as text any JSON reader takes: bytes, and the undecodable bytes that
    Python keeps in paths and arguments as lone surrogates (a folder named
    ``bad\xffdir``), as ``\xNN`` escapes; NUL as the four characters ``\x00``."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        if not value.isascii():
            value = bytes_shown(value)
        if "\x00" in value:
            # Valid JSON, but C collectors (rsyslog's json-c) cut strings at U+0000.
            value = value.replace("\x00", "\\x00")
        return value
    if isinstance(value, (list, tuple)):
        return [_mended(item) for item in value]
    if isinstance(value, dict):
        return {key: _mended(item) for key, item in value.items()}
    return value


class _SinkLogger:
    """The "logger" structlog wraps: hands the finished event dict to the process's sink."""

    def _emit(self, event: dict[str, Any]) -> None:
        _state.sink.emit(event)

    debug = info = warning = error = critical = _emit


_SINK_LOGGER: Final = _SinkLogger()


def _sink_logger_factory(*args: Any) -> _SinkLogger:
    return _SINK_LOGGER


class _Logger(structlog.BoundLoggerBase):
    """A bound logger whose level test reads the process's current setting.

    structlog's filtering loggers bake the level into their class when they are bound, so
    a logger made at import time would keep the level of that moment. This one stays right
    across ``setup_logging`` calls and costs one comparison for a disabled level (~0.3 µs;
    the per-row ``row.rejected`` debug events rely on that)."""

    def _at(self, levelno: int, method: str, event: str, args: Any, kw: Any) -> Any:
        if levelno < _state.min_level:
            return None
        return self._proxy_to_logger(method, event % args if args else event, **kw)

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        if _state.min_level > 10:
            return None
        return self._proxy_to_logger("debug", event % args if args else event, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        if _state.min_level > 20:
            return None
        return self._proxy_to_logger("info", event % args if args else event, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(30, "warning", event, args, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(40, "error", event, args, kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(50, "critical", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(40, "error", event, args, kw)

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        name = _LEVEL_NAMES.get(level, "info")
        return self._at(LEVELS[name], name, event, args, kw)


def _configure_structlog() -> None:
    """The one structlog configuration of keysync; what it writes to is in ``_state``."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _finalize],
        wrapper_class=_Logger,
        logger_factory=_sink_logger_factory,
        cache_logger_on_first_use=True,
    )


def _install(sink: _Sink, min_level: int) -> None:
    previous = getattr(_state, "sink", None)
    _state.sink = sink
    _state.min_level = min_level
    _configure_structlog()
    if isinstance(previous, _ParentSink) and previous is not sink:
        previous.close()


def _level_number(level: str, what: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ConfigError(
            f"{what}: unknown log level {level!r}; use one of {', '.join(LEVELS)}"
        ) from None


# ---------------------------------------------------------------------- public API


def setup_logging(
    *,
    level: str,
    log_file: Path | None,
    stderr_format: str = "console",
    quiet: bool = False,
    verbose: int = 0,
    stream: TextIO | None = None,
) -> None:
    """Configure logging of the parent process, once per command.

    Levels: the file gets ``level`` (``logging.level``), or debug with ``-v``; ``-q`` never
    removes anything from the file, which is the record of what happened. stderr gets
    ``level``, debug with ``-v``, and at least warning with ``-q`` (``-q`` wins over ``-v``
    on stderr). ``stream`` replaces ``sys.stderr`` (tests); by default the current
    ``sys.stderr`` is looked up at each write."""
    if stderr_format not in ("console", "json"):
        raise ConfigError(f"--log-format: expected console or json, got {stderr_format!r}")
    configured = _level_number(level, "logging.level")
    file_level = min(configured, LEVELS["debug"]) if verbose else configured
    if quiet:
        stderr_level = max(configured, LEVELS["warning"])
    elif verbose:
        stderr_level = LEVELS["debug"]
    else:
        stderr_level = configured
    target = stream if stream is not None else sys.stderr
    tty = _isatty(target)
    colors = tty and "NO_COLOR" not in os.environ and stderr_format == "console"
    file = None
    if log_file is not None:
        try:
            file = _JsonLinesFile(Path(log_file).absolute())
        except OSError as exc:
            # A path through a file is the config's fault (exit 2); a read-only disk or a
            # permission is the machine's (exit 3), as for the other folders.
            wrong_path = isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError))
            problem = ConfigError if wrong_path else RunError
            raise problem(
                f"logging.file: cannot open {log_file}: {exc.strerror or exc}; "
                "fix the path or its permissions"
            ) from None
    sink = _ParentSink(
        file=file,
        file_level=file_level,
        stderr_level=stderr_level,
        stderr_format=stderr_format,
        stream=stream,
        colors=colors,
        tty=tty,
    )
    _state.stage = None
    _state.configured = True
    _install(sink, min(file_level, stderr_level) if file is not None else stderr_level)


def tell_user(
    line: str,
    *,
    exit_code: int | None = None,
    stderr_format: str = "",
    run_id: str = "",
    command: str = "",
    quiet: bool = False,
) -> None:
    """A line a command says to its user on stderr: the line of a non-zero exit, or a note.

    On the console it is printed as it is. It is also an event (``command.failed``,
    ``command.said``) in the log file, so that a collector sees a command refused (a
    held lock, say) as well as a run, and with ``--log-format json`` that event *is*
    the line: stderr stays JSON Lines, the same lines as the file. An exit's line is an
    error, so ``-q`` and ``logging.level`` never hide it; a note is info, which ``-q``
    keeps off the terminal (the file still has it). ``stderr_format``
    (``--log-format``) counts only when logging is not set up yet (a config error).
    """
    import click

    context = click.get_current_context(silent=True)
    if not _state.configured and stderr_format == "json":  # before the config was read
        setup_logging(level="info", log_file=None, stderr_format="json", quiet=quiet)
    fields: dict[str, Any] = {"run_id": run_id} if run_id else {}  # a run's last line
    fields["command"] = command or (context.command_path if context else "keysync")
    if exit_code is not None:
        fields["exit_code"] = exit_code
    fields["message"] = line.removeprefix("keysync: ").removeprefix("error: ")
    logger = get_logger(stage="cli")
    if exit_code is None:
        logger.info("command.said", **fields)
    else:
        logger.error("command.failed", **fields)
    sink = _state.sink
    if exit_code is None and quiet:
        return  # -q: only warnings and errors on the terminal; the file has the note
    if not (isinstance(sink, _ParentSink) and sink.stderr_json):
        click.echo(line, err=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _default_sink() -> _ParentSink:
    return _ParentSink(
        file=None,
        file_level=LEVELS["warning"],
        stderr_level=LEVELS["warning"],
        stderr_format="console",
        stream=None,
        colors=False,
    )


def shutdown_logging() -> None:
    """Close the log file and go back to the import-time default (warnings on stderr)."""
    _state.configured = False
    _install(_default_sink(), LEVELS["warning"])


def effective_level() -> str:
    """The lowest level any sink of this process accepts: what workers should filter at."""
    return _LEVEL_NAMES.get(_state.min_level, "info")


def get_logger(**initial: Any) -> FilteringBoundLogger:
    """A logger with ``initial`` fields bound, e.g. ``get_logger(stage="reader")``.

    Events below the configured level cost one comparison. A logger made before
    ``setup_logging`` (at import time) follows the configuration made later."""
    return cast(FilteringBoundLogger, structlog.get_logger().bind(**initial))


def bind_run(run_id: str) -> None:
    """Every later event of this process carries ``run_id`` (all threads, all workers
    started with it)."""
    _state.run_id = _state.last_run_id = run_id
    structlog.contextvars.bind_contextvars(run_id=run_id)


def last_run_id() -> str:
    """The run this process bound last ("" if none): what ``keysync run`` ended with."""
    return _state.last_run_id


def unbind_run() -> None:
    _state.run_id = None
    structlog.contextvars.unbind_contextvars("run_id")


# ------------------------------------------------------------- worker -> parent pipe

_FRAME_MAX: Final = min(getattr(select, "PIPE_BUF", 512), 4096)
_LENGTH: Final = struct.Struct("!i")  # the framing of multiprocessing.Connection.recv_bytes
_CHUNK_HEAD: Final = struct.Struct("!cI")  # kind, worker pid
_WHOLE, _FIRST, _MIDDLE, _LAST, _STOP = b"E", b"F", b"M", b"L", b"S"


class LogQueue:
    """The write end of the log pipe, shared by every worker of a relay.

    Picklable while processes are started (pass it in ``Process(args=...)``). ``put`` writes
    each frame with one ``os.write`` of at most ``PIPE_BUF`` bytes: atomic, lock-free across
    processes, never torn by a killed writer."""

    def __init__(self, writer: Connection) -> None:
        self._writer = writer
        self._lock = threading.RLock()  # only orders the chunks of one process's threads
        self._broken = False

    def __getstate__(self) -> dict[str, Any]:
        return {"writer": self._writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._writer = state["writer"]
        self._lock = threading.RLock()
        self._broken = False

    def put(self, levelno: int, line: bytes) -> None:
        """Send one encoded event (``line`` ends with a newline) to the parent."""
        payload = bytes((levelno,)) + line
        if _LENGTH.size + 1 + len(payload) <= _FRAME_MAX:
            self._send(_WHOLE + payload)
            return
        room = _FRAME_MAX - _LENGTH.size - _CHUNK_HEAD.size
        pid = os.getpid()
        pieces = [payload[start : start + room] for start in range(0, len(payload), room)]
        with self._lock:
            for index, piece in enumerate(pieces):
                kind = _FIRST if index == 0 else _LAST if index == len(pieces) - 1 else _MIDDLE
                self._send(_CHUNK_HEAD.pack(kind, pid) + piece)

    def _send(self, message: bytes) -> None:
        if self._broken:
            return
        frame = _LENGTH.pack(len(message)) + message
        try:
            written = os.write(self._writer.fileno(), frame)
        except (BrokenPipeError, OSError):
            self._broken = True  # the parent is gone: nobody is left to read logs
            return
        if written != len(frame):  # pragma: no cover - POSIX forbids it for <= PIPE_BUF
            raise OSError(f"log pipe took {written} of {len(frame)} bytes")

    def close(self) -> None:
        self._writer.close()


class LogRelay:
    """Parent side of worker logging: a thread drains the pipe into the parent's sinks.

    Usage::

        relay = LogRelay(ctx)          # ctx = multiprocessing.get_context("forkserver")
        relay.start()
        proc = ctx.Process(target=work, args=(relay.queue, relay.level, ...))
        ...                            # in work(): setup_worker_logging(queue, level=..., ...)
        proc.join()
        relay.stop()                   # after the workers have ended: drains what is left
    """

    def __init__(self, context: BaseContext | None = None) -> None:
        ctx = context if context is not None else multiprocessing.get_context()
        reader, writer = ctx.Pipe(duplex=False)
        self._reader: Connection = reader
        self.queue = LogQueue(writer)
        self.level = effective_level()
        self._thread: threading.Thread | None = None
        self._partial: dict[int, list[bytes]] = {}
        self.dropped = 0  # events the relay could not write (never seen in practice)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._drain, name="keysync-log-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Deliver every event already sent, then stop. Call after the workers ended."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self.queue._send(_STOP)
            self._thread.join(timeout)
        self._thread = None
        for pid, pieces in self._partial.items():
            _lost(pid, sum(len(piece) for piece in pieces))
        self._partial.clear()
        if self.dropped:
            _lost(0, 0, count=self.dropped)
        self.queue.close()
        self._reader.close()

    def __enter__(self) -> LogRelay:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _drain(self) -> None:
        while True:
            try:
                message = self._reader.recv_bytes()
            except (EOFError, OSError):
                return
            kind = message[:1]
            if kind == _STOP:
                return
            try:
                if kind == _WHOLE:
                    _deliver(message[1], message[2:])
                else:
                    self._chunk(kind, message)
            except Exception:
                # The relay must outlive any one bad event: a dead relay would leave the
                # workers blocked on a full pipe. Counted, and said at stop().
                self.dropped += 1

    def _chunk(self, kind: bytes, message: bytes) -> None:
        _, pid = _CHUNK_HEAD.unpack_from(message)
        piece = message[_CHUNK_HEAD.size :]
        if kind == _FIRST:
            stale = self._partial.pop(pid, None)
            if stale is not None:  # that pid died mid-event and the number was reused
                _lost(pid, sum(len(part) for part in stale))
            self._partial[pid] = [piece]
            return
        pieces = self._partial.get(pid)
        if pieces is None:
            return  # the start of this event was never seen: nothing sound to write
        pieces.append(piece)
        if kind == _LAST:
            payload = b"".join(self._partial.pop(pid))
            try:
                _DECODER.decode(payload[1:])
            except msgspec.DecodeError:  # chunks mixed by a signal handler: never write junk
                _lost(pid, len(payload))
                return
            _deliver(payload[0], payload[1:])


def _deliver(levelno: int, line: bytes) -> None:
    sink = _state.sink
    if isinstance(sink, _ParentSink):
        sink.write(levelno, line, None)


def _lost(pid: int, size: int, count: int = 1) -> None:
    get_logger().warning("log.event_lost", worker_pid=pid, bytes=size, count=count)


def setup_worker_logging(queue: LogQueue, *, level: str, run_id: str | None, stage: str) -> None:
    """Configure logging in a child process; call it first thing in the child.

    Events are filtered at ``level`` here (pass ``relay.level``), stamped with this
    process's pid, ``run_id`` and ``stage``, and sent to the parent, which writes them."""
    _state.run_id = run_id
    _state.stage = stage
    structlog.contextvars.clear_contextvars()
    if run_id is not None:
        structlog.contextvars.bind_contextvars(run_id=run_id)
    _install(_WorkerSink(queue), _level_number(level, "worker log level"))


# Until a command configures logging (library use, tests), warnings and errors go to stderr.
_install(_default_sink(), LEVELS["warning"])
