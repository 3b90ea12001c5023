"""Writing files atomically: a reader (or an interrupted run) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path) -> Path:
    """Fail early, naming `path`, if a file cannot be written there (before any long work)."""
    path = Path(path)
    if path.is_dir():
        raise OSError(21, "is a directory, not a file name", str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OSError(20, f"{parent} is a file, not a folder", str(path))
            if not os.access(parent, os.W_OK):
                raise OSError(13, "permission denied", str(path))
            break
    return path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    OSErrors name `path` itself, not the temporary file. The file gets the usual permissions
    (0666 less the umask), not mkstemp's private 0600.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
