"""Published weights by name: `resolve_weights("resnet50.tv2_in1k") -> path of convzoo weights`.

Everything that accepts a weights file accepts a catalog name too: factory.create_model (and
so every command) and fine-tuning call `resolve_weights`; weights.py itself reads files only.
On first use of a name:

1. the publisher's file is downloaded into `<cache>/downloads/<file>` (download.py: bounded,
   resumable, progress on stderr), unless a file is already there (a manual download);
2. its hash is checked against the catalog's (SHA-256 or SHA-1, as the publisher gives it);
   a mismatching download is deleted, a mismatching manual file refused. Where the publisher
   gives no hash (some entries are served over plain http://), the first verified download's
   SHA-256 is pinned in `<cache>/pins/<name>.sha256`, and every later download or manual file
   of that name must match it (trust on first use, as ssh does with host keys);
3. it is converted with `convzoo.interop.convert(entry.source, ...)`, the catalog's
   preprocessing, labels and published accuracy are written into the WeightSpec, and the
   result is saved atomically (temporary file + rename) as `<cache>/weights/<name>.safetensors`.

The SHA-256 of the converted file is recorded beside it (`<name>.safetensors.sha256`). Later
uses check the file against that record (a read of the file, no network) and return it; a file
that no longer matches (or has no record) is converted again from the verified download and
replaced, so damaged or edited cached weights are never used.

Environment: `CONVZOO_CACHE` moves the cache (default `~/.cache/convzoo`);
`CONVZOO_OFFLINE=1` forbids network use (then only a manual download is converted).
Any failure is one line (UserError) naming the URL and the path where a manually
downloaded file is picked up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys

from ..errors import UserError
from ..outputs import atomic_write
from . import catalog
from .catalog import Entry
from .download import DownloadError, download

CACHE_ENV = "CONVZOO_CACHE"
OFFLINE_ENV = "CONVZOO_OFFLINE"

__all__ = ["Entry", "cache_dir", "cached_path", "download_path", "is_offline", "pin_path", "resolve_weights"]


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "convzoo"))


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cached_path(entry: Entry) -> str:
    """Where the converted convzoo weights of `entry` live."""
    return os.path.join(cache_dir(), "weights", f"{entry.name}.safetensors")


def download_path(entry: Entry) -> str:
    """Where the publisher's file is downloaded to, and where a manual download is picked up."""
    return os.path.join(cache_dir(), "downloads", entry.file)


def resolve_weights(name_or_path: str, log=None) -> str:
    """An existing path as is; a catalog name -> its converted weights file (fetched and
    converted on first use); anything else -> UserError suggesting close catalog names."""
    if os.path.exists(name_or_path):
        return name_or_path
    entry = catalog.get(name_or_path)
    if entry is None:
        raise catalog.unknown(name_or_path)
    out = cached_path(entry)
    log = log or _stderr
    if _cached_ok(out, log, repair=False):
        return out
    for folder in (os.path.dirname(download_path(entry)), os.path.dirname(out)):
        _writable_cache(folder)
    with _lock(download_path(entry)):  # two processes fetching one name: the second waits
        if not _cached_ok(out, log, repair=True):
            src = fetch(entry, log)
            _convert(entry, src, out, log)
            _record_hash(out)
    return out


def _writable_cache(folder: str) -> None:
    """The cache folder, made when missing; UserError (one line) when CONVZOO_CACHE (or the
    default) is a file or a folder this process cannot write."""
    where = f"{CACHE_ENV}={cache_dir()}" if os.environ.get(CACHE_ENV) else f"the cache {cache_dir()}"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{where}: cannot make {folder} ({e.strerror or e}); point {CACHE_ENV} at a writable folder"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):  # (a read-only mount: also for root)
        raise UserError(f"{where}: {folder} is not writable; point {CACHE_ENV} at a writable folder")


# files this process has hashed, by path -> (size, mtime): one command resolves a name several
# times (the command, the engine, the factory), and a large file is read once, not each time
_verified: dict[str, tuple[int, int]] = {}


def _cached_ok(out: str, log, repair: bool) -> bool:
    """The converted file exists and still has the SHA-256 recorded when it was written. With
    `repair` (only under the lock: another process may be between writing the file and its
    record) one that does not match, or has no record, is reported and converted again; it is
    replaced only when the new file is complete, so a failed download loses nothing."""
    try:
        st = os.stat(out)
    except OSError:
        return False
    if _verified.get(out) == (st.st_size, st.st_mtime_ns):
        return True
    try:
        with open(out + ".sha256") as f:
            recorded = f.read(100).strip()
    except OSError:
        recorded = ""
    got = file_hash(out, "sha256")
    if got == recorded:
        _verified[out] = (st.st_size, st.st_mtime_ns)
    if got == recorded or not repair:
        return got == recorded
    log(
        f"warning: {out} "
        + (
            f"has sha256 {got[:16]}..., not the {recorded[:16]}... recorded"
            if recorded
            else "has no hash record"
        )
        + " when it was converted: converting it again from the verified download"
    )
    return False


def _record_hash(out: str) -> None:
    digest = file_hash(out, "sha256")
    atomic_write(out + ".sha256", lambda f: f.write(digest.encode() + b"\n"))


@contextlib.contextmanager
def _lock(path: str):
    """An exclusive lock on `path + ".lock"` (POSIX flock; elsewhere none: the `.part` file and
    the hash check still keep a clash from producing wrong weights, it only fails)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(entry: Entry, log=None) -> str:
    """The publisher's file, verified: a manual download if present, else downloaded."""
    log = log or _stderr
    dest = download_path(entry)
    manual = os.path.isfile(dest)
    if not manual:
        if is_offline():
            raise _cannot(entry, f"offline ({OFFLINE_ENV}=1)")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        log(f"downloading {entry.name} from {entry.url}")
        try:
            download(entry.url, dest, max_bytes=entry.max_bytes)
        except DownloadError as e:
            raise _cannot(entry, str(e)) from None
    verify(entry, dest, delete=not manual)
    return _unpack(entry, dest) if entry.archive_member else dest


def verify(entry: Entry, path: str, delete: bool) -> None:
    """The file's hash against the catalog's; a mismatch is deleted (`delete`) or refused."""
    if entry.hash is None:
        _check_pin(entry, path, delete)
        return
    algo, _, want = entry.hash.partition(":")
    got = file_hash(path, algo)
    if got.startswith(want):
        return
    what = "downloaded" if delete else "manually placed"
    if delete:
        os.remove(path)
    raise UserError(
        f"{what} file {path} has {algo} {got[:16]}..., not the published {want[:16]}...; "
        f"{'deleted' if delete else 'not used (replace it)'} - from {entry.url}"
    )


def pin_path(entry: Entry) -> str:
    return os.path.join(cache_dir(), "pins", entry.name + ".sha256")


def _check_pin(entry: Entry, path: str, delete: bool) -> None:
    """No published hash: the first download's SHA-256 is pinned, and later files must match it
    (a file swapped on a plain-http server or on the way is refused, not converted)."""
    got = file_hash(path, "sha256")
    pin = pin_path(entry)
    try:
        with open(pin, "rb") as f:
            pinned = f.read(100).decode("ascii", "replace").strip()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(pin), exist_ok=True)
        atomic_write(pin, lambda f: f.write(got.encode() + b"\n"))
        _stderr(
            f"note: the publisher gives no hash for {entry.name}; its sha256 {got[:16]}... is pinned "
            f"in {pin}, and later downloads must match it"
        )
        return
    if got == pinned:
        return
    what = "downloaded" if delete else "manually placed"
    if delete:
        os.remove(path)
    raise UserError(
        f"{what} file {path} has sha256 {got[:16]}..., not the {pinned[:16]}... pinned at its first "
        f"download ({pin}); {'deleted' if delete else 'not used'} - from {entry.url} "
        "(delete the pin only if the publisher really changed the file)"
    )


def file_hash(path: str, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unpack(entry: Entry, archive: str) -> str:
    """The weights file inside a verified .zip (e.g. Kaiming He's models.zip), bounded."""
    import zipfile

    member = entry.archive_member
    assert member is not None  # only entries with an archive member are unpacked
    out = os.path.join(os.path.dirname(archive), os.path.basename(member))
    if os.path.isfile(out):
        return out
    try:
        with zipfile.ZipFile(archive) as z:
            info = z.getinfo(member)
            if info.file_size > (entry.max_bytes or 2**31):
                raise UserError(f"{archive}: {entry.archive_member} claims {info.file_size:,} bytes; refused")
            tmp = f"{out}.tmp{os.getpid()}"
            with z.open(info) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
            os.replace(tmp, out)
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{archive}: cannot take {entry.archive_member} out of it ({e})") from None
    return out


def _convert(entry: Entry, src: str, out: str, log) -> None:
    from ..interop import convert  # lazy: torch; `convzoo weights` reads the catalog without it
    from ..weights import save_weights  # lazy: torch, as above

    log(f"converting {os.path.basename(src)} ({entry.source}) -> {out}")
    try:
        state, spec = convert(
            entry.source,
            src,
            entry.model,
            model_kwargs=entry.model_kwargs or None,
            preprocessing=entry.preprocessing,
            **entry.convert_options,
        )
    except UserError as e:  # the verified download stays in downloads/ for the next try
        raise UserError(f"{entry.name}: {e}") from None
    if entry.labels:
        from ..data.labels import load_labels  # lazy: convzoo.data loads torch, as above

        spec.labels = load_labels(entry.labels)
    spec.converted_from = entry.url
    spec.extra = {
        **spec.extra,
        "catalog": entry.name,
        "license": entry.license,
        "dataset": entry.dataset,
        "reported": {**entry.published, "dataset": entry.dataset},
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_weights(out, state, spec)


def _cannot(entry: Entry, why: str) -> UserError:
    return UserError(
        f"cannot download {entry.name}: {why}; fetch {entry.url} yourself and put it at "
        f"{download_path(entry)}"
    )


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
