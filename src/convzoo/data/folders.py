"""Walking image folders: which names are images, a folder's class sub-folders, and the
recursive scan every folder dataset and `--data` layout uses (links kept inside the dataset,
nothing opened)."""

from __future__ import annotations

import os
import warnings

from ..errors import UserError
from ..untrusted import regular_file
from .images import IMAGE_EXTENSIONS, BrokenImageWarning


def is_image(name: str) -> bool:
    """An image file's name (by extension; hidden files are not)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_subdirs(path: str) -> list[str]:
    """The sub-folders of `path` that are not hidden, sorted."""
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise UserError(f"cannot list {path}: {e.strerror}") from None


def image_files(path: str, root: str | None = None, seen: set | None = None) -> list[str]:
    """Image files under `path` (recursively, in os.walk's sorted top-down order); names only,
    nothing is opened. Symbolic links are followed only while they stay inside `root` (the
    dataset, default `path`'s parent) and never twice to the same place (`seen`: real paths of
    folders and files already taken, shared by a whole scan, so a link loop ends and no image
    counts twice); entries that are not regular files (a FIFO named x.jpg would block a reader)
    are skipped. Skipped entries are named in one warning."""
    root = os.path.realpath(root or os.path.dirname(os.path.abspath(path)))
    seen = set() if seen is None else seen
    seen.add(os.path.realpath(path))
    found, skipped, stack = [], [], [path]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append(f"{folder} ({e.strerror})")
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith(".") or not (entry.is_dir() or is_image(entry.name)):
                continue
            why = _not_to_take(entry, root, seen)
            if why:
                skipped.append(f"{entry.path} ({why})")
            elif entry.is_dir():
                subdirs.append(entry.path)
            else:
                found.append(entry.path)
        stack.extend(reversed(subdirs))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} entries under {path}: {'; '.join(skipped[:3])}"
            + (" ..." if len(skipped) > 3 else ""),
            BrokenImageWarning,
            stacklevel=2,
        )
    return found


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _not_to_take(entry: os.DirEntry, root: str, seen: set) -> str | None:
    """Why a folder or image entry is not taken (None: take it, and remember its real path)."""
    real = os.path.realpath(entry.path)
    if entry.is_symlink() and not _inside(real, root):
        return "links outside the dataset" if os.path.exists(real) else "dangling link"
    if real in seen:
        return "reached before through a link"
    if not entry.is_dir() and not regular_file(entry.path):
        return "not a regular file" if os.path.exists(entry.path) else "dangling link"
    seen.add(real)
    return None
