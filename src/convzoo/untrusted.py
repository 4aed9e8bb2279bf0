"""Checks for files a user may have downloaded: a few KB must never take the machine down.

Every reader of such a file bounds what it allocates by what the file can honestly hold, before
it allocates: a zip (torch's `.pt/.pth` format) may not declare much more than its own size, a
decompressed stream stops at the size its header declares, a file that is not a regular file
(a FIFO named `x.jpg` would block forever) is never opened. Each refusal is one UserError line.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib

from .errors import UserError

# a torch zip stores its records uncompressed: the declared sizes add up to about the file's
# size. Other zip writers may deflate the pickle; real tensors do not compress 16x.
ZIP_RATIO = 16
ZIP_SLACK = 1 << 20


def check_zip_sizes(path: str, ratio: int = ZIP_RATIO) -> None:
    """UserError when the zip directory of `path` declares more bytes than the file can hold
    (a decompression bomb); nothing is decompressed. Non-zip files pass (checked elsewhere)."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: damaged zip directory ({type(e).__name__})") from None
    size = os.path.getsize(path)
    declared = sum(i.file_size for i in infos)
    if declared > ratio * size + ZIP_SLACK:
        raise UserError(
            f"{path}: its zip records declare {declared:,} bytes in a {size:,}-byte file "
            f"(more than {ratio}x): refused as a decompression bomb"
        )
    for i in infos:
        inflates = i.file_size > ratio * max(i.compress_size, 1) + ZIP_SLACK
        if i.compress_type != zipfile.ZIP_STORED and inflates:
            raise UserError(
                f"{path}: record {i.filename} declares {i.file_size:,} bytes compressed to "
                f"{i.compress_size:,}: refused as a decompression bomb"
            )


def check_zip_crc(path: str) -> None:
    """UserError when a record of the zip `path` does not match its CRC-32: torch.load does not
    check them, so a flipped byte in a tensor would load as a silently different number. Reads
    the whole file once (about 1 GB/s); call it after `check_zip_sizes`."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not a zip: its reader says what it is
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: damaged zip ({type(e).__name__})") from None
    if bad is not None:
        raise UserError(
            f"{path}: record {bad} does not match its CRC-32: the file changed after it was written "
            f"(a damaged disk or copy, or an edit); refused"
        )


MAX_NESTING = 32  # lists and dicts inside each other: convzoo's own files need 4


def check_nesting(value, what: str, limit: int = MAX_NESTING) -> None:
    """UserError when a parsed JSON/YAML value nests lists and dicts deeper than `limit`: every
    later recursive walk (validation, merging, printing) would end in RecursionError. Iterative,
    so it cannot overflow itself."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                raise UserError(f"{what}: nested more than {limit} levels deep; refused")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))


def check_flow_nesting(text: str, what: str, limit: int = MAX_NESTING) -> None:
    """The same bound on YAML/JSON text before it is parsed, for its bracketed (flow) form: PyYAML
    takes seconds to reach its RecursionError on a few thousand `[`. Brackets inside quotes are
    not counted; block-style nesting is left to `check_nesting` after the parse."""
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise UserError(f"{what}: nested more than {limit} levels deep; refused")
        elif ch in "]}":
            depth -= 1


def read_at_most(f, limit: int, what: str) -> bytes:
    """All of the stream `f` when it holds at most `limit` bytes; UserError when it holds more."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{what}: decompresses to more than the {limit:,} bytes it declares; refused")
    return data


def regular_file(path: str) -> bool:
    """True for a regular file (symlinks followed); FIFOs, sockets, devices, folders: False."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_regular(path: str, mode: str = "rb"):
    """`open(path)` for a regular file only: O_NONBLOCK so a FIFO cannot block the open itself,
    then fstat of the opened descriptor (no race with a swapped file)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise
