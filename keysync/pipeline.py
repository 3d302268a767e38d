"""Wires the stages together: readers -> (normalizer workers) -> merger, in processes or not.

``parallel: true`` starts one reader process per source. With ``workers: null``
(the default) each reader normalizes its own batches and sends ``KeyBatch``es
to the parent: one hop per batch, measured fastest on 2 cores
(docs/performance.md, "Pipeline"). An explicit ``workers: N`` starts N
normalizer processes between the readers and the parent instead (fed by a
bounded queue). Batches cross as msgpack bytes. The merger runs here, in the
parent. ``parallel: false`` calls the very same stage functions in one
process, source after source. All give the same index, because the merger
applies every source's batches in ``seq`` order.

Every child talks to the parent through a pipe of its own, of which the parent
keeps only the reading end. A child killed half-way through sending a batch
(an OOM killer, ``kill -9``) then leaves its pipe at end-of-file: the parent
drops the half batch and reports the source unavailable. With one queue
shared by all children it would wait forever for the rest of that batch.

Children are started with the ``forkserver`` method so they inherit no open
SQLite connection, lock file or log file from the parent. They watch their
parent and exit if it dies, so a ``kill -9`` of the run leaves no orphans.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.forkserver
import os
import pickle
import queue
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import msgspec

from keysync import logs
from keysync.config import Config, NormalizeConfig, SourceConfig
from keysync.errors import STOPS, Interrupted, RunError, child_died, children_deaf_to_stops
from keysync.messages import KeyBatch, RawBatch, SourceFailed, SourceFinished, SourceOpened
from keysync.normalization import compile_rules
from keysync.stages.merger import KeyIndex, SourcePosition
from keysync.stages.normalizer import normalize_batch
from keysync.stages.reader import Header, SourceUnavailable, read_batches, read_header

POLL_S = 0.2
# Open files the parent holds per child while they start (its pipe's two ends, its
# sentinel, the fork server's connection), and a margin for the run's own files:
# measured, the fewest a run needs is about 18 + 4 per source (README, "Exit codes").
DESCRIPTORS_PER_CHILD = 4
DESCRIPTORS_SPARE = 8

UNTERMINATED = (
    "its last line has no line end, as an export cut short ends (a copy still running, a "
    "full disk): that last row is read as it is; check it"
)


CHANGED_WHILE_READ = "the file changed while it was read (is an export still writing it?)"


def file_state(path: Path) -> tuple[int, int, int, int] | None:
    """What writing to or replacing a file changes: its inode, size, modification and
    status-change times (ns; no one can set the latter). None if it cannot be seen.

    A source rewritten in place while it is read (an export that runs while keysync does)
    gave rows of two versions, or a file cut short, and a run that said nothing: a third
    of B's keys reported as propagation gaps, committed, counting towards deprecation.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class PipelineObserver:
    """Hooks the runner uses to follow the merge: checkpoints, progress, resume timing.

    The default does nothing; ``should_stop`` is polled between batches so that
    Ctrl-C stops the merge at a clean point instead of in the middle of a write.
    """

    def batch_applied(self, batch: KeyBatch) -> None:
        """A batch is now part of the index."""

    def source_unavailable(self, system: str, reason: str) -> None:
        """``system`` cannot be (fully) read; it is left out of the comparison."""

    def should_stop(self) -> bool:
        return False


@dataclass
class PipelineResult:
    """The merged index, and which systems could not be read (system -> reason)."""

    index: KeyIndex
    unavailable: dict[str, str]


@dataclass
class SourceJob:
    """One source to read, and where to start (a resumed run starts mid-file)."""

    system: str
    path: Path
    source: SourceConfig
    position: SourcePosition | None = None
    stall: bool = False


def _parent_alive() -> bool:
    parent = mp.parent_process()
    return parent is None or parent.is_alive()


def _put(target: Any, item: Any) -> bool:
    """Put with backpressure, giving up when the parent is gone (no orphans)."""
    while True:
        try:
            target.put(item, timeout=1.0)
            return True
        except queue.Full:
            if not _parent_alive():
                _abandon(target)
                return False


# A control message (pickled) starts with this byte; a batch is a msgpack array, which
# never does. The parent tells the two apart by the first byte of what it receives.
_CONTROL = b"\x00"
# Room for a few batches in each child's pipe (Linux; elsewhere the system's default),
# so a reader can work ahead of the parent as a shared bounded queue let it.
_PIPE_BYTES = 1 << 20


def _send(conn: Any, message: bytes | SourceOpened | SourceFinished | SourceFailed) -> bool:
    """Send to the parent (blocks while the pipe is full); False once the parent is gone."""
    data = message if isinstance(message, bytes) else _CONTROL + pickle.dumps(message)
    try:
        conn.send_bytes(data)
    except OSError:  # a broken pipe: the parent died; nobody is left to read
        return False
    return True


def _receive(conn: Any) -> KeyBatch | SourceOpened | SourceFinished | SourceFailed | None:
    """The next message from a child; None when its pipe is closed (finished or killed)."""
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):  # includes a batch cut short by the sender's death
        return None
    if data[:1] == _CONTROL:
        message: SourceOpened | SourceFinished | SourceFailed = pickle.loads(data[1:])
        return message
    return _decode_keys(data)


def _widen(conn: Any) -> None:
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _abandon(*queues: Any) -> None:
    """The parent is gone: do not wait at exit to flush data nobody will read."""
    for target in queues:
        target.cancel_join_thread()


# The parent's merge is the serial part of reading: five busy readers on two cores would
# get 5/6 of the CPU while the parent waits its turn. Niceness 5 (weight ~1/3) lets the
# parent run whenever it has a batch; idle cores still go to the readers. Measured: read
# phase 5 x 200k, 2.25-2.41 s -> 2.06-2.11 s (docs/performance.md). More (10) starves the
# readers when other programs keep the machine busy.
CHILD_NICENESS = 5


def _collect_less() -> None:
    """Raise the young-generation threshold of the garbage collector in a child.

    A batch makes and frees about a thousand containers (lists, tuples, structs),
    none of them in a cycle. At the default threshold (700) that started a
    collection for nearly every batch, and now and then a full one over the
    whole process: ~7 % of a reader's CPU at 1,000 rows a batch
    (docs/performance.md, "Session 5"). At that size a batch's containers never
    number 10,000 at once, so collections all but stop; cyclic garbage, should
    any appear, is still collected.
    """
    gc.set_threshold(10_000)


def _leave_stops_to_parent() -> None:
    """A child ignores Ctrl-C and SIGTERM: the parent decides when the run stops, and
    then kills its children, or they see it gone (``_parent_alive``) and end. (They are
    born with both held, ``Pipeline._context``; this keeps them out should a child
    ever be started otherwise.)"""
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)


def _yield_to_parent() -> None:
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):  # raising niceness is never refused on Linux
            os.nice(CHILD_NICENESS)


def _make_room_for(children: int) -> None:
    """Raise the soft limit of open files to what starting ``children`` needs, or refuse.

    Out of descriptors half-way through starting them, the fork server printed its own
    traceback (EOFError) before keysync's line. The soft limit is raised within the hard
    one, as the shell's ``ulimit -n`` would; past the hard one, nothing is started.
    """
    import resource

    try:
        held = len(os.listdir("/dev/fd"))
    except OSError:  # no /dev/fd to count them: the start says it, if it comes to that
        return
    need = held + DESCRIPTORS_PER_CHILD * children + DESCRIPTORS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise RunError(
            f"too many open files: {children} processes to start need about {need} "
            f"open files, and the limit is {soft}; raise it (ulimit -n {need}) and run again"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _start_positions(job: SourceJob, header: Header) -> dict[str, int]:
    if job.position is None or job.position.offset == 0:
        return {"start_offset": header.data_offset, "start_line": 2, "start_seq": 0}
    return {
        "start_offset": job.position.offset,
        "start_line": job.position.line,
        "start_seq": job.position.seq,
    }


# Batches cross a queue as msgpack bytes: msgspec encodes a batch ~3x faster than pickle
# and the queue then pickles one bytes object (a copy). Control messages stay pickled.
_encode = msgspec.msgpack.Encoder().encode
_decode_raw = msgspec.msgpack.Decoder(RawBatch).decode
_decode_keys = msgspec.msgpack.Decoder(KeyBatch).decode


def reader_main(
    job: SourceJob,
    batch_size: int,
    raw_queue: Any,
    to_parent: Any,
    log_queue: Any,
    log_level: str,
    run_id: str | None,
    normalize: tuple[NormalizeConfig, int] | None = None,
) -> None:
    """Reader process: stream one source; control messages go to the parent.

    With ``normalize`` (rules, max key length) the reader normalizes its own batches
    and sends ``KeyBatch``es straight to the parent (``to_parent``, its own pipe);
    without, it sends ``RawBatch``es to the normalizer workers (``raw_queue``).
    """
    _leave_stops_to_parent()
    _yield_to_parent()
    _collect_less()
    logs.setup_worker_logging(log_queue, level=log_level, run_id=run_id, stage="reader")
    log = logs.get_logger(system=job.system)
    if job.stall:
        log.warning("source.stalling", reason="simulation.failures.simulate_timeout")
        while _parent_alive():
            time.sleep(0.5)
        if raw_queue is not None:
            _abandon(raw_queue)
        return
    try:
        header = read_header(job.system, job.path, job.source)
        size = job.path.stat().st_size
    except SourceUnavailable as exc:
        _send(to_parent, SourceFailed(job.system, str(exc)))
        return
    if not _send(to_parent, SourceOpened(job.system, size, header.columns)):
        return
    if not header.ends_with_line_end:
        log.warning("source.unterminated", path=str(job.path), detail=UNTERMINATED)
    if header.timestamp_missing:
        log.warning("source.timestamp_column_missing", detail=header.timestamp_missing)
    normalizer = compile_rules(normalize[0]) if normalize else None
    batches = 0
    try:
        for batch in read_batches(
            job.system,
            job.path,
            job.source,
            batch_size,
            header=header,
            **_start_positions(job, header),
        ):
            if normalize and normalizer:
                sent = _send(to_parent, _encode(normalize_batch(batch, normalizer, normalize[1])))
            else:
                sent = _put(raw_queue, _encode(batch))
            if not sent:
                return
            batches += 1
    except OSError as exc:
        _send(to_parent, SourceFailed(job.system, f"{job.path}: read failed: {exc}"))
        return
    _send(
        to_parent, SourceFinished(job.system, _start_positions(job, header)["start_seq"] + batches)
    )


def normalizer_main(
    rules: NormalizeConfig,
    max_key_length: int,
    raw_queue: Any,
    to_parent: Any,
    log_queue: Any,
    log_level: str,
    run_id: str | None,
) -> None:
    """Normalizer process: ``RawBatch`` in, ``KeyBatch`` out (its own pipe), until ``None``."""
    _leave_stops_to_parent()
    _yield_to_parent()
    _collect_less()
    logs.setup_worker_logging(log_queue, level=log_level, run_id=run_id, stage="normalizer")
    normalizer = compile_rules(rules)
    while True:
        try:
            message: bytes | None = raw_queue.get(timeout=1.0)
        except queue.Empty:
            if not _parent_alive():
                return
            continue
        if message is None:
            return
        batch = normalize_batch(_decode_raw(message), normalizer, max_key_length)
        if not _send(to_parent, _encode(batch)):
            return


class Pipeline:
    """Reads every source into one ``KeyIndex``."""

    def __init__(
        self,
        config: Config,
        jobs: Iterable[SourceJob],
        *,
        index: KeyIndex,
        run_id: str | None = None,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.config = config
        self.jobs = list(jobs)
        self.index = index
        self.run_id = run_id
        self.observer = observer or PipelineObserver()
        self.log = logs.get_logger(stage="pipeline")
        self._file_states: dict[str, tuple[int, int, int, int] | None] = {}

    def run(self) -> PipelineResult:
        self._file_states = {job.system: file_state(job.path) for job in self.jobs}
        if self.config.processing.parallel:
            return self._run_parallel()
        return self._run_sequential()

    # -- one process -----------------------------------------------------------------

    def _run_sequential(self) -> PipelineResult:
        processing = self.config.processing
        normalizer = compile_rules(self.config.normalize)
        unavailable: dict[str, str] = {}
        for job in self.jobs:
            self._check_stop()
            if job.stall:
                self.log.warning(
                    "source.stalling",
                    system=job.system,
                    reason="simulation.failures.simulate_timeout",
                )
                time.sleep(processing.source_timeout_s)
                self._unavailable(unavailable, job.system, self._timeout_reason())
                continue
            self._file_states[job.system] = file_state(job.path)  # read now, not at the start
            try:
                header = read_header(job.system, job.path, job.source)
                size = job.path.stat().st_size
            except SourceUnavailable as exc:
                self._unavailable(unavailable, job.system, str(exc))
                continue
            self.log.info("source.available", system=job.system, path=str(job.path), bytes=size)
            if not header.ends_with_line_end:
                self.log.warning(
                    "source.unterminated",
                    system=job.system,
                    path=str(job.path),
                    detail=UNTERMINATED,
                )
            if header.timestamp_missing:
                self.log.warning(
                    "source.timestamp_column_missing",
                    system=job.system,
                    detail=header.timestamp_missing,
                )
            try:
                for raw in read_batches(
                    job.system,
                    job.path,
                    job.source,
                    processing.batch_size,
                    header=header,
                    **_start_positions(job, header),
                ):
                    self._apply(normalize_batch(raw, normalizer, processing.max_key_length))
                    self._check_stop()
            except OSError as exc:
                self._unavailable(unavailable, job.system, f"{job.path}: read failed: {exc}")
                continue
            self._finished(unavailable, job.system)
        return PipelineResult(self.index, unavailable)

    def _apply(self, batch: KeyBatch) -> None:
        for applied in self.index.add(batch):
            self.observer.batch_applied(applied)

    def _unavailable(self, unavailable: dict[str, str], system: str, reason: str) -> None:
        unavailable[system] = reason
        self.observer.source_unavailable(system, reason)
        self.log.warning("source.unavailable", system=system, reason=reason)

    def _check_stop(self) -> None:
        if self.observer.should_stop():
            raise Interrupted("interrupted")

    def _finished(self, unavailable: dict[str, str], system: str) -> None:
        """A source read to its end; unavailable if its file changed while it was read."""
        path = next(job.path for job in self.jobs if job.system == system)
        if file_state(path) != self._file_states[system]:
            self._unavailable(unavailable, system, f"{path}: {CHANGED_WHILE_READ}")
            return
        keys = self.index.finish(system)
        self.log.info(
            "source.finished",
            system=system,
            rows_read=keys.rows_read,
            rows_rejected=len(keys.rejected),
            unique_keys=len(keys),
        )
        if keys.rejected:
            self.log.info("source.rejected_rows", system=system, count=len(keys.rejected))
            for row in keys.rejected:
                self.log.debug(
                    "row.rejected",
                    system=system,
                    line=row.line,
                    error_type=row.error_type,
                    message=row.message,
                )

    def _timeout_reason(self) -> str:
        seconds = self.config.processing.source_timeout_s
        return f"no data for {seconds:g} s (processing.source_timeout_s); treated as unavailable"

    # -- many processes ------------------------------------------------------------------

    def _context(self) -> ForkServerContext:
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["keysync.pipeline"])
        # The server, and so every child it forks, never takes Ctrl-C or SIGTERM: they
        # reach the whole process group, and one in the second the server spends importing
        # ended the run with its traceback. The parent stops the children.
        with children_deaf_to_stops():
            multiprocessing.forkserver.ensure_running()
        return context

    def _run_parallel(self) -> PipelineResult:
        processing = self.config.processing
        # workers: null (the default) lets each reader normalize its own batches: one
        # process and one queue hop per batch fewer, measured faster on 2 cores
        # (docs/performance.md). An explicit number starts that many normalizer workers.
        workers = processing.workers or 0
        _make_room_for(len(self.jobs) + workers)
        context = self._context()  # (after: the fork server takes the limit it starts with)
        normalize = None if workers else (self.config.normalize, processing.max_key_length)
        # Only normalizer workers need a queue (its semaphores would otherwise be reported
        # "leaked" by multiprocessing when a second Ctrl-C ends the run at once).
        raw_queue = context.Queue(maxsize=workers * 4) if workers else None
        # One pipe per child; the parent keeps the reading ends (see the module docstring).
        pipes = {job.system: context.Pipe(duplex=False) for job in self.jobs}
        pipes.update({f"normalizer-{n}": context.Pipe(duplex=False) for n in range(workers)})
        relay = logs.LogRelay(context)
        relay.start()
        level = relay.level  # what this command asked for (-v / -q / config)
        readers = {
            job.system: context.Process(
                target=reader_main,
                name=f"keysync-reader-{job.system}",
                args=(
                    job,
                    processing.batch_size,
                    raw_queue,
                    pipes[job.system][1],
                    relay.queue,
                    level,
                    self.run_id,
                    normalize,
                ),
                daemon=True,
            )
            for job in self.jobs
        }
        normalizers = [
            context.Process(
                target=normalizer_main,
                name=f"keysync-normalizer-{n}",
                args=(
                    self.config.normalize,
                    processing.max_key_length,
                    raw_queue,
                    pipes[f"normalizer-{n}"][1],
                    relay.queue,
                    level,
                    self.run_id,
                ),
                daemon=True,
            )
            for n in range(workers)
        ]
        inboxes = {}
        try:
            # In the try: children started before one that cannot be (out of descriptors)
            # are killed, not left to multiprocessing's exit, whose SIGTERM they ignore.
            for process in [*readers.values(), *normalizers]:
                process.start()
            for name, (receiving, sending) in pipes.items():
                sending.close()  # the child's copy is the only writer left: its death is EOF
                _widen(receiving)
                inboxes[receiving] = name
            result = self._merge(readers, normalizers, inboxes)
        except BaseException:
            for process in [*readers.values(), *normalizers]:
                if process.is_alive():
                    process.kill()  # (deaf to SIGTERM: see _leave_stops_to_parent)
            raise
        finally:
            if raw_queue is not None:  # one stop message for each normalizer worker
                for _ in normalizers:
                    try:
                        raw_queue.put(None, timeout=1.0)
                    except queue.Full:
                        break
            for process in [*readers.values(), *normalizers]:
                if process.pid is None:  # never started
                    continue
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
            # The children are gone: nothing left in this queue needs delivering, and
            # waiting at exit to flush it into a pipe nobody reads would hang forever.
            if raw_queue is not None:
                _abandon(raw_queue)
            for receiving in inboxes:
                receiving.close()
            relay.stop()
        return result

    def _merge(
        self,
        readers: dict[str, Any],
        normalizers: list[Any],
        inboxes: dict[Any, str],
    ) -> PipelineResult:
        """The parent's loop: apply batches, watch for finished, failed and stalled sources.

        ``inboxes``: the reading end of each child's pipe -> the child's name.
        """
        timeout_s = self.config.processing.source_timeout_s
        paths = {job.system: job.path for job in self.jobs}
        unavailable: dict[str, str] = {}
        expected: dict[str, int] = {}
        last_seen = dict.fromkeys(readers, time.monotonic())
        done: set[str] = set()
        closed: set[str] = set()  # children whose pipe is at end-of-file: all read
        open_inboxes = dict(inboxes)
        while len(done) < len(readers):
            self._check_stop()
            ready = multiprocessing.connection.wait(list(open_inboxes), timeout=POLL_S)
            now = time.monotonic()
            for conn in ready:
                message = _receive(conn)
                if message is None:  # finished, or died (perhaps half-way through a batch)
                    closed.add(open_inboxes.pop(conn))
                elif isinstance(message, KeyBatch):
                    if message.system not in unavailable:
                        last_seen[message.system] = now
                        self._apply(message)
                elif isinstance(message, SourceOpened):
                    last_seen[message.system] = now
                    self.log.info(
                        "source.available",
                        system=message.system,
                        path=str(paths[message.system]),
                        bytes=message.size,
                    )
                elif isinstance(message, SourceFinished):
                    last_seen[message.system] = now
                    expected[message.system] = message.batches
                elif isinstance(message, SourceFailed):
                    done.add(message.system)
                    self._unavailable(unavailable, message.system, message.message)
            if not open_inboxes:
                time.sleep(POLL_S)  # every child is gone: only the checks below are left
            for system, process in readers.items():
                if system in done:
                    continue
                if system in expected and self.index[system].position.seq >= expected[system]:
                    done.add(system)
                    self._finished(unavailable, system)
                elif system not in expected and now - last_seen[system] > timeout_s:
                    process.kill()
                    done.add(system)
                    self._unavailable(unavailable, system, self._timeout_reason())
                elif system not in expected and system in closed:
                    # Its pipe is at end-of-file, so every message it sent has been read,
                    # and none said it finished: it died.
                    process.join(timeout=1.0)
                    done.add(system)
                    reason = child_died("reader process", process.exitcode)
                    self._unavailable(unavailable, system, reason)
            if not ready and not all(p.is_alive() for p in normalizers):
                dead = next(p for p in normalizers if not p.is_alive())
                raise RunError(child_died("a normalizer worker", dead.exitcode))
        return PipelineResult(self.index, unavailable)
