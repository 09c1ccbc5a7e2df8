"""Output folders that never lose data: ownership checks, one writer per output, one staging place per run,
atomic swaps, and one-line errors when a write fails (disk full, file too large, read-only file system).

The rules every command that writes a folder (`pdae train --out/--resume-dir`, `pdae import --out`) follows:

- **Only our folders are replaced or removed.** A folder is ours when it holds nothing but the files this
  program writes there (`is_model_folder`, `check_resume_folder`); an empty folder may be filled. Anything else
  (a file, a folder with other files) is refused with one line, before any work and with `--force` too.
- **One writer per output.** `OutputLock` holds an exclusive POSIX lock (`fcntl.lockf`) on `<out>.lock` beside
  the output for the whole run; a second run on the same output is refused at once, naming the holder's PID
  and host. The kernel drops the lock when its process dies, even by `kill -9`, and, unlike `flock`, no
  forked child (a DataLoader worker outliving its killed parent) keeps it.
- **Nothing half-written in a final folder.** Every file and folder is first written in the run's staging
  folder `.<out>.pdae-staging` beside the output (`RunStaging`) and renamed into place (`os.replace`, or an
  atomic `renameat2(RENAME_EXCHANGE)` to replace a folder, `swap_in`). The staging folder is removed on every
  exit path; one left by a killed run is removed by the next run on the same output (under the lock).
- **A failed write is one line** (`WriteError`, an OSError) naming the file and the reason, e.g.
  "cannot write runs/m/model.safetensors: No space left on device"; its temporary files are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

# Files of a model folder (pdae.checkpoint: model.safetensors, config.json, metadata.json) and what training
# adds to it; the format tag of config.json (pdae.checkpoint.FORMAT).
MODEL_FOLDER_FORMAT = "pdae-bench/1"
MODEL_CORE_FILES = ("model.safetensors", "config.json", "metadata.json")
MODEL_EXTRA_ENTRIES = ("train_config.json", "train_log.jsonl", "snapshots")
SNAPSHOT_NAME = re.compile(r"img\d{9}")
# A resume folder (pdae.training): the state, the log so far, the snapshots so far.
RESUME_ENTRIES = ("state.pt", "train_log.jsonl", "snapshots")
# Temporary names written into a resume folder by earlier versions (removed when the folder is reused).
_LEGACY_TEMP = re.compile(r"\.state\.pt\.tmp\d+|\.img\d{9}\.tmp-\w+")

LOCK_SUFFIX = ".lock"
LOCK_TAG = "pdae-lock"
STAGING_SUFFIX = ".pdae-staging"
STAGING_MARKER = ".pdae-staging"


class OutputError(RuntimeError):
    """An output cannot be used (not ours, locked by another run, a file); the message is one line."""


class WriteError(OSError):
    """Writing a file failed (disk full, file too large, I/O error); the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------------
# What is ours.


def _entries(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise OutputError(f"{path}: cannot list it ({exc.strerror or exc})") from None


def _show(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _has_our_config(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == MODEL_FOLDER_FORMAT


def foreign_entries(path: Path, kind: str) -> list[str]:
    """Entries of folder `path` that this program does not write into a folder of `kind` ("model" or
    "resume"), recursing into `snapshots/`; [] when the folder holds only our files (or nothing)."""
    allowed = MODEL_CORE_FILES + MODEL_EXTRA_ENTRIES if kind == "model" else RESUME_ENTRIES
    foreign = [n for n in _entries(path) if n not in allowed and not (kind == "resume" and _LEGACY_TEMP.fullmatch(n))]
    for name in ("snapshots",):
        sub = path / name
        if name in foreign or not sub.exists():
            continue
        if not sub.is_dir():
            foreign.append(name)
            continue
        for snap in _entries(sub):
            snap_path = sub / snap
            if kind == "resume" and _LEGACY_TEMP.fullmatch(snap):
                continue
            if not (SNAPSHOT_NAME.fullmatch(snap) and snap_path.is_dir() and is_model_folder(snap_path)):
                foreign.append(f"{name}/{snap}")
    return foreign


def is_model_folder(path: Path) -> bool:
    """A folder this program wrote as a model folder: config.json with our format tag, metadata.json, and
    nothing but model-folder files (training's log, config and snapshots included)."""
    path = Path(path)
    if not path.is_dir() or not (path / "metadata.json").is_file() or not _has_our_config(path):
        return False
    return not foreign_entries(path, "model")


def check_replaceable(target: str | Path, *, force: bool, flag: str = "--out") -> None:
    """Before any work: may `target` be written? A missing path or an empty folder: yes. One of our model
    folders: only with `force` (it is then replaced by an atomic swap once the new one is complete).
    A file, or a folder holding anything else: never (OutputError, one line)."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise OutputError(f"{target}: {flag} exists and is not a folder; choose another {flag}")
    names = _entries(target)
    if not names:
        return
    if not is_model_folder(target):
        foreign = foreign_entries(target, "model") if _has_our_config(target) else names
        raise OutputError(f"{target}: {flag} is not a model folder written by pdae (it holds "
                          f"{_show(foreign or names)}); refusing to replace it, choose another {flag}")
    if not force:
        raise OutputError(f"{target}: already exists; remove it or pass --force to replace it")


def check_resume_folder(path: str | Path, flag: str = "--resume-dir") -> None:
    """A resume folder must be missing, empty or hold only what training writes there (OutputError)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise OutputError(f"{path}: {flag} exists and is not a folder; choose another {flag}")
    foreign = foreign_entries(path, "resume")
    if foreign:
        raise OutputError(f"{path}: {flag} is not a resume folder written by pdae (it holds {_show(foreign)}); "
                          f"refusing to use it, choose another {flag}")


def remove_legacy_temps(resume_dir: Path) -> None:
    """Remove temporary files that earlier versions wrote inside a resume folder (a killed write)."""
    for folder in (resume_dir, resume_dir / "snapshots"):
        if folder.is_dir():
            for p in folder.iterdir():
                if _LEGACY_TEMP.fullmatch(p.name):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()


def overlaps(a: Path, b: Path) -> bool:
    """Is one of the two paths the other or inside it?"""
    a, b = Path(os.path.abspath(a)), Path(os.path.abspath(b))
    return a == b or a in b.parents or b in a.parents


def existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(existing_ancestor(a)).st_dev == os.stat(existing_ancestor(b)).st_dev


def make_parent(path: Path, flag: str = "--out") -> None:
    """Create the parent folders of `path`; one line when that is impossible (a file in the way, no permission)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder for {flag} ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------------------
# One writer per output.


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(target.name + LOCK_SUFFIX)


_HELD: set[str] = set()  # lock files this process holds (POSIX locks do not exclude their own process)


class OutputLock:
    """Exclusive lock on `<target>.lock` (`fcntl.lockf`, a POSIX record lock: owned by this process only, never
    by its forked children), held from `__enter__` to `__exit__`.

    The file records `pdae-lock pid=<pid> host=<host> since=<time>`; a second process (or a second
    OutputLock in this one) is refused at once (OutputError naming that PID and host). The file is removed on
    release; one left by a killed process (the kernel has dropped its lock) is simply taken over. (A POSIX
    lock is also dropped when its process closes any descriptor of the file: nothing else opens it here.)
    """

    def __init__(self, target: str | Path, flag: str = "--out") -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.flag = flag
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        make_parent(self.path, self.flag)
        key = os.path.abspath(self.path)
        if key in _HELD:
            raise OutputError(f"{self.target}: another run in this process is writing it (lock {self.path})")
        for _ in range(100):  # retried only if the file was replaced between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot create the lock file for {self.flag} "
                                  f"({exc.strerror or exc})") from None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise OutputError(f"{self.path}: cannot lock it ({exc.strerror or exc})") from None
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.target}: another run is writing it ({holder}; lock {self.path}); "
                                  "wait for it to finish or stop it") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)
                continue
            old = _read_all(fd)
            if old.strip() and not old.startswith(LOCK_TAG):
                os.close(fd)  # closing drops the lock
                raise OutputError(f"{self.path}: exists and is not a pdae lock file; refusing to overwrite it "
                                  f"(it guards {self.flag} {self.target})")
            since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = f"{LOCK_TAG} pid={os.getpid()} host={socket.gethostname()} since={since}\n".encode()
            with contextlib.suppress(OSError):  # a full disk must not stop the lock (it is the flock)
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
            self.fd = fd
            _HELD.add(key)
            return self
        raise OutputError(f"{self.path}: the lock file keeps changing; is another run starting?")

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        os.close(self.fd)  # closing drops the lock
        self.fd = None
        _HELD.discard(os.path.abspath(self.path))


def _read_all(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _read_holder(fd: int) -> str:
    text = _read_all(fd)
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if "pid" in fields:
        since = f" since {fields['since']}" if "since" in fields else ""
        return f"pid {fields['pid']} on host {fields.get('host', '?')}{since}"
    return "a process that has not yet written its PID"


# ---------------------------------------------------------------------------------------------------
# One staging place per run.


def staging_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}{STAGING_SUFFIX}")


_ACTIVE: dict[str, RunStaging] = {}


def staging_for(target: str | Path) -> RunStaging | None:
    """The entered RunStaging of `target`, if any (pdae.checkpoint.save_model_folder builds there)."""
    return _ACTIVE.get(os.path.abspath(target))


class RunStaging:
    """The run's staging folder `.<target>.pdae-staging` beside `target` (same file system, so a rename
    moves a finished file or folder into place). Enter it only while holding `OutputLock(target)`: a
    folder left by a killed run is then removed first. Removed on exit, whatever the exit."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = staging_path(self.target)
        self._count = 0

    def __enter__(self) -> RunStaging:
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_dir() or self.path.is_symlink() or not (self.path / STAGING_MARKER).is_file():
                raise OutputError(f"{self.path}: exists and is not a pdae staging folder; remove it to write "
                                  f"{self.target}")
            shutil.rmtree(self.path)  # a killed run's leftovers (we hold the output's lock)
        make_parent(self.path)
        try:
            self.path.mkdir()
            (self.path / STAGING_MARKER).write_text(f"staging folder of {self.target.name} (pid {os.getpid()})\n")
        except OSError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            raise WriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        _ACTIVE[os.path.abspath(self.target)] = self
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.pop(os.path.abspath(self.target), None)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def new_path(self, name: str) -> Path:
        """A fresh path inside the staging folder (nothing there yet) for a file or folder `name`."""
        self._count += 1
        return self.path / f"{self._count:04d}-{name}"


# ---------------------------------------------------------------------------------------------------
# Atomic moves.

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where it is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def swap_in(new: Path, target: Path) -> None:
    """Move the complete folder `new` to `target`. An existing `target` (checked to be ours by the caller)
    is exchanged atomically with `new` and then removed, so `target` is at every moment either the old or
    the new folder; without renameat2 it is renamed aside first (a crash between the two renames leaves
    the old folder in `.<target>.old-*`)."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # now the old folder
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


# ---------------------------------------------------------------------------------------------------
# Failed writes -> one line.


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(existing_ancestor(path))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _file_size_limit() -> int | None:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def write_failure(path: str | Path, exc: BaseException) -> WriteError:
    """A one-line WriteError for a failed write of `path`: the OS reason where there is one (ENOSPC, EFBIG,
    EROFS, EIO, ...), else the first line of the library's message, with the free space when it is short."""
    path = Path(path)
    err = getattr(exc, "errno", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, WriteError):
        reason, err = getattr(exc, "reason", text), exc.errno
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    elif "No space left" in text or "StorageFull" in text:
        reason, err = "No space left on device", errno.ENOSPC
    elif "File too large" in text or "FileTooLarge" in text:
        reason, err = "File too large", errno.EFBIG
    else:
        reason = text[:200]
        free = _free_bytes(path)
        fsize = _file_size_limit()
        if free is not None and free < (1 << 20):
            reason, err = f"No space left on device ({free} bytes free; {reason})", errno.ENOSPC
        elif fsize is not None:
            reason, err = f"File too large (the file size limit is {fsize} bytes; {reason})", errno.EFBIG
    out = WriteError(f"cannot write {path}: {reason}")
    out.errno, out.reason = err, reason
    return out


@contextlib.contextmanager
def writing(path: str | Path, cleanup: Iterable[Path] = ()) -> Iterator[None]:
    """Turn a failed write of `path` (OSError, torch's writer RuntimeError, SafetensorError) into a one-line
    WriteError, after removing the `cleanup` paths (its temporary files)."""
    try:
        yield
    except (WriteError, KeyboardInterrupt, SystemExit):
        _remove(cleanup)
        raise
    except Exception as exc:  # noqa: BLE001 - only errors raised while writing `path`
        _remove(cleanup)
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError" or (
            isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("write", "inline_container", "space"))
        ):
            raise write_failure(path, exc) from None
        raise
    except BaseException:
        _remove(cleanup)
        raise


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        p = Path(p)
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()


def write_bytes_atomic(path: Path, data: bytes, staging: RunStaging | None = None) -> None:
    """`path` gets `data` completely or keeps its old content: written in `staging` (or a hidden sibling),
    fsynced, then renamed over `path`."""
    path = Path(path)
    tmp = staging.new_path(path.name) if staging is not None else path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path, cleanup=[tmp]):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
