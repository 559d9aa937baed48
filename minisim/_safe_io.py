"""Writing outputs without losing anything: write aside then swap, overwrite only our own, one writer.

Every writer of minisim (zarr store, video, notebook copy, sweep store, TIFF and NWB export) goes
through three steps:

1. :func:`check_overwritable` before any work: an existing target is replaced only when it is
   something minisim wrote (a store whose root attrs carry ``format_version`` and ``spec``, a
   video with its ``.spec.json``, a notebook copy with its marker file), never the current folder
   or a folder above it.
2. :func:`exclusive_lock` for the whole write: a lock file ``<target>.lock`` created with
   ``O_CREAT | O_EXCL`` holds the writer's pid, host and start time; a second writer gets
   :class:`TargetLockedError` naming them. A lock left by a dead process on this host is taken
   over with a warning.
3. :func:`write_aside` gives a fresh sibling ``<target>.partial-<id>`` to write into, and
   :func:`swap_into_place` moves it onto the target once complete (:func:`locked_aside` is
   steps 2 and 3 in one ``with`` block, as the TIFF and NWB exports use them). The old target is removed only
   after the new one is in place: on Linux the two are exchanged in one ``renameat2`` call; where
   that is not available the old one is first renamed to ``<target>.old-<id>``, and
   :func:`recover` (run by the next writer, or by a load that finds the target missing) moves it
   back if a kill fell between the two renames. So a kill at any moment leaves the old target or
   the new one, never neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

#: File in a notebook copy that says minisim made it (so ``--force`` may replace it).
NOTEBOOK_MARKER = ".minisim-notebook"
#: Kinds of target :func:`check_overwritable` knows.
KINDS = ("store", "video", "notebook")


class TargetLockedError(RuntimeError):
    """Another process is writing the same target."""


class NotOursError(FileExistsError):
    """The target exists and is not something minisim wrote: it is never replaced."""


# --------------------------------------------------------------------------- what may be replaced
def _describe(path: Path) -> str:
    if path.is_symlink():
        return f"a symbolic link to {os.readlink(path)}"
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        if not names:
            return "an empty folder"
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        return f"a folder holding {len(names)} entries ({shown})"
    return f"a file of {path.stat().st_size} bytes"


def _is_minisim_store(path: Path) -> bool:
    meta = path / "zarr.json"
    if not path.is_dir() or path.is_symlink() or not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes") or {}
    except (OSError, ValueError):
        return False
    return "format_version" in attrs and "spec" in attrs


def _is_minisim_video(path: Path) -> bool:
    spec = path.with_suffix(".spec.json")
    return path.is_file() and not path.is_symlink() and spec.is_file()


def _is_notebook_copy(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / NOTEBOOK_MARKER).is_file()


def refuse_cwd_or_parent(path: str | Path, what: str = "output") -> None:
    """Raise ValueError when ``path`` is the current folder or one of the folders above it."""
    target = Path(path).absolute().resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ValueError(
            f"{what} {str(path)!r} is the current folder or a folder above it "
            f"({target}); minisim never replaces that: name a new path inside it"
        )


def check_overwritable(path: str | Path, kind: str) -> None:
    """Raise unless ``path`` is missing or is a ``kind`` that minisim wrote (so it may be replaced).

    ``kind`` is ``"store"`` (a zarr folder whose root attrs carry ``format_version`` and
    ``spec``), ``"video"`` (an ``.avi`` with its ``.spec.json`` beside it) or ``"notebook"`` (a
    folder holding :data:`NOTEBOOK_MARKER`). The current folder and the folders above it are
    refused whatever they hold.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; allowed: {', '.join(KINDS)}")
    path = Path(path)
    refuse_cwd_or_parent(path)
    if not path.exists() and not path.is_symlink():
        return
    ours = {"store": _is_minisim_store, "video": _is_minisim_video,
            "notebook": _is_notebook_copy}[kind](path)
    if not ours:
        what = {"store": "a minisim store (a zarr folder whose root attrs name format_version and spec)",
                "video": "a minisim video (an .avi with its .spec.json beside it)",
                "notebook": f"a minisim notebook copy (a folder holding {NOTEBOOK_MARKER})"}[kind]
        raise NotOursError(
            f"{path} exists and is {_describe(path)}, not {what}; minisim replaces only what it "
            "wrote: move it away or choose another path"
        )


# --------------------------------------------------------------------------- one writer at a time
def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks after boot) of ``pid`` from ``/proc``, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` still runs and can write.

    Where ``/proc`` tells, a zombie (killed, not yet reaped by its parent) is not running, and
    neither is a process whose start time differs from ``start_ticks`` (the pid was reused).
    """
    if Path("/proc/self/stat").is_file():
        stat = _proc_stat(pid)
        if stat is None:
            return False
        state, ticks = stat
        if state in ("Z", "X", "x"):
            return False
        return start_ticks is None or ticks == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}


#: How long a lock found empty (its holder between creating it and writing its record) is
#: read again before it counts as unreadable.
LOCK_SETTLE_S = 1.0


def _settled_holder(lock: Path) -> dict:
    """The record of ``lock``, read again for up to :data:`LOCK_SETTLE_S` while it is empty: a
    writer creates the lock exclusively and writes its record right after, so a second writer
    can find it in between ({} if it stays unreadable, or is gone)."""
    deadline = time.monotonic() + LOCK_SETTLE_S
    while True:
        holder = _read_holder(lock)
        if holder or not lock.exists() or time.monotonic() >= deadline:
            return holder
        time.sleep(0.01)


@contextlib.contextmanager
def exclusive_lock(target: str | Path) -> Iterator[Path]:
    """Hold ``<target>.lock`` (created exclusively) while the block runs; remove it after.

    A second writer gets :class:`TargetLockedError` naming the holder's pid, host and start
    time. A lock whose holder is a process of this host that no longer runs is taken over with a
    warning (a lock from another host is never judged stale: remove it by hand). On Linux a
    killed holder not yet reaped (a zombie) counts as gone, and so does a pid now used by another
    process (the lock records its holder's start time).
    """
    lock = lock_path(target)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": uuid.uuid4().hex,
          "start_ticks": _start_ticks(os.getpid())}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _settled_holder(lock)
            pid, host = holder.get("pid"), holder.get("host")
            ticks = holder.get("start_ticks")
            ticks = ticks if isinstance(ticks, int) else None
            if host == me["host"] and isinstance(pid, int) and not _pid_alive(pid, ticks):
                # rename first, so that of two writers judging the same lock stale only one
                # removes it, and never a fresh lock the other has just made
                stale = lock.with_name(f"{lock.name}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(lock, stale)
                    if _read_holder(stale).get("token") != holder.get("token"):
                        with contextlib.suppress(FileExistsError):
                            os.link(stale, lock)  # not the one judged stale: put it back
                    else:
                        warnings.warn(f"taking over the stale lock {lock} of process {pid} on "
                                      f"{host} (no longer running)", stacklevel=3)
                    stale.unlink()
                continue
            if not holder:
                raise TargetLockedError(
                    f"{target} is locked by {lock} (unreadable: being created?); if no minisim "
                    "process is writing it, remove the lock file") from None
            raise TargetLockedError(
                f"{target} is being written by process {pid} on host {host} (since "
                f"{holder.get('started')}); wait for it to finish, or if that process is gone "
                f"remove {lock}") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise TargetLockedError(f"could not take the lock {lock} of {target}; try again")
    try:
        recover(target)
        yield lock
    finally:
        if _read_holder(lock).get("token") == me["token"]:
            lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------- write aside, swap
def _siblings(target: Path, tag: str) -> list[Path]:
    prefix = f"{target.name}.{tag}-"
    return sorted(p for p in target.parent.glob(f"{glob_escape(prefix)}*") if p.name.startswith(prefix))


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def has_leftovers(target: str | Path) -> bool:
    """Whether an interrupted swap left ``<target>.old-<id>`` beside a missing ``target``."""
    return bool(_siblings(Path(target), "old"))


def write_aside(target: str | Path) -> Path:
    """A fresh, unused sibling path ``<target>.partial-<id>`` to write the new target into."""
    target = Path(target)
    return target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:12]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap paths ``a`` and ``b`` atomically (Linux renameat2); False where not supported."""
    global _libc
    if not USE_RENAME_EXCHANGE:
        return False
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"renameat2 exchange of {a} and {b}: {os.strerror(err)}")


#: Exchange old and new in one step where the system allows it (set False to use the
#: two-rename fallback, e.g. to test it).
USE_RENAME_EXCHANGE = True


def swap_into_place(partial: str | Path, target: str | Path) -> None:
    """Move the finished ``partial`` onto ``target``; the old target is removed only afterwards.

    Where ``renameat2(RENAME_EXCHANGE)`` works the two swap in one atomic step. Otherwise the old
    target is renamed to ``<target>.old-<id>`` first and then the new one in; a kill in between
    is undone by :func:`recover`.
    """
    partial, target = Path(partial), Path(target)
    if not target.exists() and not target.is_symlink():
        os.rename(partial, target)
        return
    if _exchange(partial, target):
        _remove(partial)  # now the old target
        return
    old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(target, old)
    os.rename(partial, target)
    _remove(old)


def recover(target: str | Path) -> bool:
    """Undo a swap a kill interrupted, and clear what dead writers left beside ``target``.

    Call it holding the target's lock. If ``target`` is missing and an ``<target>.old-<id>``
    exists (the old target, renamed away just before the kill), it is moved back; then every
    ``.partial-``/``.old-`` sibling left by a dead writer is removed. Returns whether the old
    target was moved back.
    """
    target = Path(target)
    restored = False
    olds = _siblings(target, "old")
    if not target.exists() and olds:
        os.rename(olds[-1], target)
        olds = olds[:-1]
        restored = True
    for p in (*olds, *_siblings(target, "partial")):
        _remove(p)
    return restored


@contextlib.contextmanager
def locked_aside(target: str | Path, beside: dict[Path, str] | None = None) -> Iterator[Path]:
    """One writer, written aside, swapped in: the whole write of a file (or folder) ``target``.

    Holds ``target``'s :func:`exclusive_lock` for the whole block (a second writer gets
    :class:`TargetLockedError` naming this one) and yields a fresh sibling path
    (:func:`write_aside`) to write into. When the block ends, each text file of ``beside``
    (path -> text, e.g. the ``<name>.spec.json`` that marks an export as minisim's) is written
    atomically, then the partial is swapped onto ``target`` (:func:`swap_into_place`). When the
    block raises, the partial is removed and ``target`` is left as it was. Check whether
    ``target`` may be replaced before entering and again inside (another writer may have
    finished it in between).
    """
    with exclusive_lock(target):
        partial = write_aside(target)
        try:
            yield partial
            for path, text in (beside or {}).items():
                write_text_atomic(path, text)
            swap_into_place(partial, target)
        except BaseException:
            _remove(partial)
            raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a fresh sibling and rename it onto ``path`` (never half a file)."""
    path = Path(path)
    tmp = write_aside(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
