"""A bounded, resumable HTTP(S) download to a file, with a progress bar on stderr.

Why not a library: the whole job is one GET with a Range header; the standard library does
it, and every bound is explicit here:

- a socket timeout on connect and on every read (a silent server cannot hang us);
- a byte limit (from the catalog, or MAX_BYTES): a larger Content-Length is refused before
  reading, a body that grows past it is cut and its partial file deleted;
- redirects only to http(s) URLs, at most MAX_REDIRECTS;
- a partial download (`<dest>.part`) is resumed with `Range: bytes=N-`; a server that ignores
  Range (200 instead of 206) restarts it from byte 0. A connection cut midway is retried, from
  where it stopped, up to ATTEMPTS times in one call; the `.part` file also survives the call.

Only `download()`'s caller decides what a finished file is worth (its hash is checked there);
the final name appears only after the whole body arrived (rename of the `.part` file).
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 30.0  # per socket operation (connect, each read)
MAX_BYTES = 2 * 1024**3  # the bound when the catalog knows no size
MAX_REDIRECTS = 5
ATTEMPTS = 3  # tries per call when the connection breaks midway
CHUNK = 1 << 20


class DownloadError(Exception):
    """The download failed; the message is one line (the caller adds URL and manual path)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib also follows ftp), and only a few."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):
            raise DownloadError(f"refused a redirect to a non-HTTP URL ({newurl[:80]})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def download(
    url: str, dest: str, max_bytes: int | None = None, timeout: float = TIMEOUT_S, progress: bool = True
) -> str:
    """Fetch `url` into `dest` (resuming `dest + ".part"`); returns `dest`. DownloadError on
    failure, with the `.part` file kept when it may be resumed and deleted when it is bad."""
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"only http(s) URLs are downloaded, not {url[:80]}")
    limit = max_bytes or MAX_BYTES
    part = dest + ".part"
    last = None
    for _ in range(ATTEMPTS):
        try:
            _fetch_once(url, part, limit, timeout, progress)
            os.replace(part, dest)
            return dest
        except (OSError, http.client.HTTPException) as e:  # cut, reset, timeout: resume
            if isinstance(e, urllib.error.HTTPError):
                raise DownloadError(f"HTTP {e.code} {e.reason}") from None
            if isinstance(e, urllib.error.URLError):
                raise DownloadError(f"cannot reach the server ({e.reason})") from None
            last = e
    raise DownloadError(
        f"the connection broke {ATTEMPTS} times ({type(last).__name__}: {last}); run again to resume"
    )


def _fetch_once(url: str, part: str, limit: int, timeout: float, progress: bool) -> None:
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "convzoo", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial file is longer than the resource: start over
            os.remove(part)
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored Range: the body is the whole file
            have = 0
        elif have and not _range_starts_at(resp.headers.get("Content-Range"), have):
            raise DownloadError(f"the server answered Range with {resp.headers.get('Content-Range')!r}")
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            _drop(part)
            raise DownloadError(f"the file is {total:,} bytes, over the {limit:,}-byte limit")
        _stream(resp, part, have, total, limit, progress)


def _range_starts_at(content_range: str | None, start: int) -> bool:
    # "bytes 100-199/200"
    if content_range is None:
        return False
    try:
        return int(content_range.split()[1].split("-")[0]) == start
    except (AttributeError, IndexError, ValueError):
        return False


def _stream(resp, part: str, have: int, total: int | None, limit: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        desc=os.path.basename(part)[:-5],
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    with bar, open(part, "ab" if have else "wb") as f:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            have += len(chunk)
            if have > limit:
                f.close()
                _drop(part)
                raise DownloadError(f"the body grew past the {limit:,}-byte limit; refused")
            f.write(chunk)
            bar.update(len(chunk))
    if total is not None and have < total:  # a cut that read() reported as a clean end
        raise http.client.IncompleteRead(b"", total - have)


def _drop(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
