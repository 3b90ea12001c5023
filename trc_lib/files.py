"""Files: inputs read only when they are regular files of a bounded size; outputs written
atomically, so a reader (or an interrupted run) never sees half a file.

An input that is a FIFO, a device or a folder is refused before it is opened (a FIFO would hang
the read, /dev/zero would fill the memory), and so is one larger than INPUT_LIMITS allows for
its kind. An existing output that is not a regular file (a link, a FIFO, a device) is refused,
never replaced.

A file is written to a temporary `.NAME.trc-PID.XXXXXXXX.tmp` beside it and renamed onto NAME. A
process killed outright (SIGKILL, a power cut) cannot delete its temporary file; the process id
in the name lets the next write into the same folder recognize it as stale (its writer is gone)
and delete it, without touching the files of a writer still running, nor any file whose name
lacks the `trc-` mark (another program's).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import TRCError

INPUT_LIMITS = {"dataset": 8 * 2**30, "checkpoint": 8 * 2**30, "answers file": 2**30,
                "control sequences file": 2**30, "template": 2**20}  # bytes


def check_input(path, kind: str) -> Path:
    """`path` if it is a regular file within INPUT_LIMITS[kind]; else TRCError naming it."""
    path = Path(path)
    if not path.exists():
        raise TRCError(f"{path}: no such {kind}")
    if not path.is_file():
        raise TRCError(f"{path}: not a regular file (a folder, FIFO or device is never read as a {kind})")
    size, limit = path.stat().st_size, INPUT_LIMITS[kind]
    if size > limit:
        raise TRCError(f"{path}: {size:,} bytes, more than a {kind} may have ({limit:,}: "
                       f"trc_lib.files.INPUT_LIMITS[{kind!r}])")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path) -> Path:
    """Fail early, naming `path`, if a file cannot be written there (before any long work)."""
    path = Path(path)
    if path.is_dir():
        raise OSError(21, "is a directory, not a file name", str(path))
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(17, "exists and is not a regular file (a link, a FIFO or a device is never replaced): "
                          "choose another name", str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OSError(20, f"{parent} is a file, not a folder", str(path))
            if not os.access(parent, os.W_OK):
                raise OSError(13, "permission denied", str(path))
            break
    return path


def check_folder(folder, option: str = "output folder") -> Path:
    """Fail early, naming `folder`, if files cannot be written into it (it may not exist yet)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OSError(20, f"{option}: is a file, not a folder", str(folder))
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise OSError(20, f"{option}: {existing} is a file, not a folder", str(folder))
            if not os.access(existing, os.W_OK | os.X_OK):
                raise OSError(13, f"{option}: permission denied", str(folder))
            break
    return folder


LOCK_NAME = ".trc.lock"  # in an output folder while a command writes there: "PID COMMAND"


@contextmanager
def output_lock(folder, command: str):
    """Hold `folder` for `command` while it runs. A second command writing into the same folder at
    the same time is refused, naming the holder; a lock whose process is gone is taken over. The
    folder is made if missing, and removed again if the command left it empty."""
    folder = check_folder(folder, "output_dir")
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pid, _, holder = lock.read_text(errors="replace").strip().partition(" ")
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                raise TRCError(f"{folder}: {holder or 'another command'} (process {pid}) is writing here; "
                               f"wait for it to finish or choose another folder") from None
            lock.unlink(missing_ok=True)
    else:
        raise TRCError(f"{folder}: could not take its lock {LOCK_NAME}")
    with os.fdopen(handle, "w") as file:
        file.write(f"{os.getpid()} {command}\n")
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
        if made and not any(folder.iterdir()):
            folder.rmdir()


_TEMPORARY = re.compile(r"^\..+\.trc-(\d+)\.[^.]+\.tmp$")


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files of atomic_path in `folder` whose writing process is gone."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    OSErrors name `path` itself, not the temporary file. The file gets the usual permissions
    (0666 less the umask), not mkstemp's private 0600.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.trc-{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:  # a full disk while writing (numpy and torch name no file): name the output
        if e.filename not in (None, tmp) or e.errno is None:
            raise
        raise OSError(e.errno, f"{e.strerror}; the file there before, if any, is unchanged", str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON, atomically. Non-finite floats (a best loss that was never
    set, a diverged one) are written as null: Infinity and NaN are not JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
