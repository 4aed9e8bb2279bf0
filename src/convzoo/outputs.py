"""Output paths a command writes to (`--out`, `--report`, `--cam`): checked before any work.

`output_dir(path, flag)` returns the folder, created if needed, or raises UserError in one line
for an empty path, a path that is a file, or a folder this process cannot write, so a run never
fails with a traceback after an hour of work. `disk_errors(path)` turns an OSError of a write
into one line ("no space left on device", "permission denied"), the previous file kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

from .errors import RunFailed, UserError


def output_dir(path, flag: str = "--out") -> str:
    """`path` as a writable folder (made when missing); UserError naming `flag` otherwise."""
    path = os.fspath(path) if path is not None else ""
    if not path.strip():
        raise UserError(f"{flag} is empty: give a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable")
    return path


def output_file(path, flag: str) -> str:
    """A file to write (`--out FILE.npy`): its folder must exist and be writable, it is no folder."""
    path = os.fspath(path) if path is not None else ""
    if not path.strip():
        raise UserError(f"{flag} is empty: give a file name")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: folder {folder} is not writable")
    return path


def describe_os_error(e: OSError, path: str, kept: str = "the previous file is kept") -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on device writing {path}; {kept}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {e.strerror}; {kept}"
    return f"writing {path} failed: {e.strerror or e}; {kept}"


@contextlib.contextmanager
def disk_errors(path: str):
    """An OSError inside (a write of `path`) becomes RunFailed with one line (exit code 1)."""
    try:
        yield
    except OSError as e:
        raise RunFailed(describe_os_error(e, path)) from None


# ---- atomic writes ------------------------------------------------------------------------------
TMP_SUFFIX = re.compile(r"\.tmp\d+$")  # `.NAME.tmpPID`: what a killed atomic write leaves


def temp_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp{os.getpid()}")


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode() -> int:
    """What open() gives a new file here (0666 less the umask); safetensors writes 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# Writers that report a failed write without an OSError: torch's zip writer (RuntimeError
# "[enforce fail at inline_container.cc] unexpected pos", "file write failed") and safetensors
# (SafetensorError "I/O error: No space left on device (os error 28)").
_WRITER_ERRORS = ("RuntimeError", "SafetensorError")
_WRITE_FAILED = re.compile(r"os error (\d+)|unexpected pos|write failed|I/O error", re.IGNORECASE)
FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk


def free_bytes(folder: str) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    return st.f_bavail * st.f_frsize


def as_os_error(e: BaseException, path: str) -> OSError | None:
    """The OSError behind a writer's own exception type (None: `e` is no failed write): errno
    from its text ("os error 28"), else ENOSPC when the file system is (nearly) full."""
    if isinstance(e, OSError):
        return e
    if type(e).__name__ not in _WRITER_ERRORS:
        return None
    m = _WRITE_FAILED.search(str(e))
    if m is None:
        return None
    if m.group(1):
        code = int(m.group(1))
        return OSError(code, os.strerror(code))
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if free is not None and free < FULL_BELOW:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"{type(e).__name__}: {str(e)[:200]}")


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary file name beside `path`; after the body wrote it, fsync it and move it
    over `path` (os.replace), then fsync the folder. On any failure the temporary file is
    removed and `path` keeps its previous content; an OSError, or a writer's exception for a
    failed write (`as_os_error`), becomes RunFailed (one line)."""
    tmp = temp_name(path)
    try:
        with disk_errors(path):
            try:
                yield tmp
            except Exception as e:
                os_error = as_os_error(e, tmp)  # (the partial file still takes its room: measured now)
                if os_error is None or os_error is e:
                    raise
                raise os_error from e
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, _file_mode())  # every run file gets the same permissions
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str, write) -> None:
    """Call `write(file_object)` on a temporary file, then move it over `path` durably."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()


def atomic_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temps(folder: str) -> list[str]:
    """Delete the temporary files killed atomic writes left in `folder` (call it only while
    holding the folder's lock: no live writer then); returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if TMP_SUFFIX.search(name) and os.path.isfile(full) and not os.path.islink(full):
            os.remove(full)
            removed.append(name)
    return removed
