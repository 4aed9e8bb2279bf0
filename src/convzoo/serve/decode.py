"""Decoding uploads with bounded memory: a pixel cap, reduced-size decoding, a memory budget.

The file loader (`data.images.load_image`) accepts up to PIL's 89.5 MP, and decoding a large
RGBA PNG costs ~20 bytes per pixel on the way to RGB (decode, copy, background, composite,
convert): four 343 KB uploads of 9400 x 9400 took a server from 1 GB to 9 GB. A server takes
files from anyone, so it decodes differently:

1. `probe` reads the header only: the loader's checks (bomb limit, 20:1 aspect), then the
   server's own cap, `max_pixels` (default 50 MP, `--max-image-mp`), on the pixels that will
   really be decoded. It returns the decode's memory estimate.
2. The app reserves that estimate from a `DecodeBudget` (default 1 GiB, `--decode-memory-mb`)
   before decoding: big images wait for each other, small ones pass (413 for one image that
   would need more than the whole budget).
3. `decode`: JPEGs are decoded as `convzoo predict` and the datasets decode them (`load_image`
   with the transform's `draft_size`: 1/2, 1/4 or 1/8 scale in the decoder where the resize
   allows), so their answers are predict's. Other formats up to `EXACT_PIXELS` too; larger ones
   are reduced by an integer factor right after decoding, keeping the shorter side at least twice
   what the preprocessing resizes to (alpha premultiplied first, so transparent edges average as
   they would after compositing): their probabilities can differ from predict's in the third
   decimal.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from ..data.images import BadImage, check_size, to_rgb

EXACT_PIXELS = 16_000_000  # a 12 MP phone photo decodes exactly as `convzoo predict` does
MAX_PIXELS = 50_000_000
BUDGET_BYTES = 2**30
# Peak bytes per decoded pixel beyond the decoded image itself: RGB/L, the EXIF transpose copy;
# alpha, the RGBA copy, background, composite and RGB image; 16-bit, numpy's int64 scaling. The
# estimates stay above the peak measured (ru_maxrss, 16 MP PNGs, Pillow 13), in bytes per pixel
# estimated/measured: RGB 12/8, L 9/6, RGBA 28/24, P+transparency 25/18, I;16 26/15; reduced
# (36 MP, factor 11): RGB 4.3/4, RGBA 12.3/8, P 9.3/9.
CONVERSION_BYTES = {"RGB": 8, "L": 8, "1": 8, "CMYK": 12, "YCbCr": 12}
CONVERSION_DEFAULT = 24  # alpha, palette, 16/32-bit modes
REDUCIBLE = {"RGB", "L", "RGBA", "LA", "P", "CMYK", "I"}


class TooLarge(Exception):
    """An upload the server will not decode (413); `reason` says why in one line."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


@dataclass
class Probe:
    image: Image.Image  # opened, header read (and JPEG draft set), no pixel decoded
    name: str
    factor: int  # integer reduction after decoding (1: none)
    cost: int  # bytes the decode is expected to take at its peak

    def close(self) -> None:
        self.image.close()


def _pixel_bytes(img: Image.Image) -> int:
    return 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4


def probe(data: bytes, name: str, need: int, max_pixels: int = MAX_PIXELS) -> Probe:
    """Open `data` (header only) and decide how to decode it; `BadImage` or `TooLarge` if not at all.

    `need`: the shorter side the preprocessing resizes to (the transform's `draft_size`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise BadImage(name, f"decompression bomb refused: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage(name, "not an image (empty, unknown format or corrupt header)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds on a bad header
        raise BadImage(name, f"{type(e).__name__}: {e}") from None
    try:
        check_size(img, name)  # the loader's limits: 89.5 MP, 20:1
        w, h = img.size
        big = w * h > EXACT_PIXELS and need and min(w, h) >= 4 * need
        if need and img.format == "JPEG":
            img.draft(None, (need, need))  # as load_image(draft_size=need); decodes nothing yet
        pixels = img.width * img.height
        if pixels > max_pixels:
            raise TooLarge(
                name,
                f"{w}x{h} = {w * h / 1e6:.1f} MP to decode exceeds this server's limit of "
                f"{max_pixels / 1e6:g} MP (--max-image-mp); send a smaller image",
            )
        factor = 1
        if big and img.format != "JPEG" and img.mode in REDUCIBLE:
            factor = max(1, min(img.size) // (2 * need))
        raw = pixels * _pixel_bytes(img)
        if factor > 1:
            # decoded image + its premultiplied/RGBA copy for alpha modes, then a small image
            alpha = img.mode in ("RGBA", "LA", "P")
            cost = raw + (pixels * 8 if alpha else 0) + pixels // (factor * factor) * 32
        else:
            cost = raw + pixels * CONVERSION_BYTES.get(img.mode, CONVERSION_DEFAULT)
        return Probe(img, name, factor, cost)
    except BaseException:
        img.close()
        raise


def decode(p: Probe) -> Image.Image:
    """The probed image as upright 8-bit RGB (the loader's conversions), at reduced size if planned."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = p.image
            img.load()
            img = _reduce(img, p.factor) if p.factor > 1 else ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (BadImage, TooLarge):
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... on bad data
        raise BadImage(p.name, f"{type(e).__name__}: {e}") from None
    finally:
        p.close()


ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """`img` reduced by `factor` (box average) and turned upright; alpha is averaged premultiplied,
    as compositing first would."""
    orientation = img.getexif().get(0x0112)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "LA":
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        small = img.convert("RGBa").reduce(factor).convert("RGBA")
    else:
        small = img.reduce(factor)
    return small.transpose(ORIENTATION[orientation]) if orientation in ORIENTATION else small


class DecodeBudget:
    """Bytes of decode memory shared by all requests: `hold(cost)` waits until they fit.

    First come, first served: a large image waiting for room is not overtaken by later small ones
    forever, and memory never exceeds `capacity` (one image above it is refused by the caller)."""

    def __init__(self, capacity: int = BUDGET_BYTES):
        self.capacity, self.used = capacity, 0
        self._waiters: list[tuple[int, asyncio.Future]] = []

    @contextlib.asynccontextmanager
    async def hold(self, cost: int):
        cost = min(cost, self.capacity)
        if self._waiters or self.used + cost > self.capacity:
            future = asyncio.get_running_loop().create_future()
            entry = (cost, future)
            self._waiters.append(entry)
            try:
                await future
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif future.done() and not future.cancelled():
                    self._release(cost)  # granted just as we were cancelled
                raise
        else:
            self.used += cost
        try:
            yield
        finally:
            self._release(cost)

    def _release(self, cost: int) -> None:
        self.used -= cost
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            cost_next, future = self._waiters.pop(0)
            if not future.done():
                self.used += cost_next
                future.set_result(None)
