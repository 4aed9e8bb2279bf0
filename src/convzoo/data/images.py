"""Reading one image file robustly: `load_image(path) -> RGB PIL image` or `BadImage`.

What it does with odd files (each case is generated and checked in tests/test_data.py):
- truncated, empty, random bytes, unknown format -> `BadImage(path, reason)`; datasets turn that
  into a warning naming the file and a `None` item that `collate_skip_broken` counts;
- more pixels than `MAX_PIXELS` (PIL's decompression-bomb limit, 89.5 MP by default) -> refused
  from the header, before any pixel is decoded;
- a longer side more than `MAX_ASPECT` times the shorter -> refused from the header: resizing
  the shorter side to the network's scale would blow it up (a 196-byte 20000x2 PNG became a
  2,560,000 x 256 image, 10 GB, in the resize before the crop);
- EXIF orientation -> applied, so the image is upright;
- grayscale, 1-bit, CMYK, YCbCr -> converted to RGB (CMYK with PIL's conversion, which also
  undoes the inverted Adobe CMYK of Photoshop JPEGs);
- alpha (RGBA, LA, palette with a transparent colour) -> composited on `ALPHA_BACKGROUND`,
  white by default: transparent regions of logos and product shots are meant to be seen on a
  white page, and dropping alpha would expose whatever colour the encoder left under it
  (often black, sometimes garbage);
- 16-bit grayscale (PNG/TIFF, PIL modes I;16*, I) -> scaled to 8 bits, v8 = round(v * 255 / 65535)
  (65535 -> 255, 32768 -> 128), never clipped at 255; 16-bit RGB PNGs are already reduced to
  their high byte by PIL (= the same scaling within 1/255);
- 32-bit float images (mode F) -> refused: their range is not defined by the format;
- JPEGs much larger than needed -> decoded at 1/2, 1/4 or 1/8 scale with PIL's draft mode
  when the caller gives `draft_size` (the shorter side it needs); the result is never smaller
  than `draft_size`.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError
from ..untrusted import open_regular

# The names taken for images wherever a folder is read (datasets, predict, calibration): formats
# `load_image` decodes (PIL: JPEG, PNG, BMP, GIF, TIFF, WebP, and the netpbm family PBM/PGM/PPM).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
MAX_PIXELS: int | None = Image.MAX_IMAGE_PIXELS  # None disables the check (trusted data only)
MAX_ASPECT = 20  # panoramas are ~4:1 to 10:1; beyond 20:1 the resize before the crop explodes
ALPHA_BACKGROUND = (255, 255, 255)


class BrokenImageWarning(UserWarning):
    """An image file was skipped (its dataset item is None)."""


class BadImage(UserError):
    """An image file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason.splitlines()[0] if reason else "unreadable"
        super().__init__(f"{self.path}: {self.reason}")


def _composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_16bit(img: Image.Image) -> Image.Image:
    a = np.asarray(img)
    if a.dtype.kind == "f" or (a.size and int(a.max()) > 65535) or (a.size and int(a.min()) < 0):
        raise ValueError(f"{img.mode} image with values outside 0..65535 is not supported")
    # round(v * 255 / 65535) without float error: (v * 255 + 32767) // 65535
    a8 = ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(a8, "L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any supported mode to 8-bit RGB (rules in the module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _composite(img)
    if mode == "P":
        return _composite(img) if "transparency" in img.info else img.convert("RGB")
    if mode.startswith("I"):
        return _scale_16bit(img)
    if mode == "F":
        raise ValueError("32-bit float image: value range undefined, refusing to guess")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def check_size(img: Image.Image, path: str) -> None:
    w, h = img.width, img.height
    if MAX_PIXELS is not None and w * h > MAX_PIXELS:
        raise BadImage(
            path,
            f"{w}x{h} = {w * h} pixels exceeds the "
            f"decompression-bomb limit of {MAX_PIXELS} pixels; refused without decoding",
        )
    if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
        raise BadImage(
            path,
            f"{w}x{h}: aspect ratio above {MAX_ASPECT}:1 refused (resizing its shorter side "
            f"to 256 px would make it {256 * max(w, h) // max(1, min(w, h))} px long)",
        )


def load_image(path, draft_size: int | None = None, data: bytes | None = None) -> Image.Image:
    """Decode `path` into an upright 8-bit RGB image, or raise `BadImage(path, reason)`.

    `data` (optional): the file's bytes, already read (e.g. a tar shard member); `path` then
    only names it in messages.

    `draft_size` (optional): the shorter side the caller needs; JPEGs at least twice that size
    are decoded at reduced scale (PIL draft mode), which is much faster for large photos.
    """
    path = str(path)
    try:
        with warnings.catch_warnings():
            # our own limit below replaces PIL's warning; PIL still raises above 2x its limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # a path: a regular file only (a FIFO named x.jpg would block the open forever)
            source = open_regular(path) if data is None else contextlib.nullcontext(io.BytesIO(data))
            with source as f, Image.open(f) as img:  # reads the header only
                check_size(img, path)
                if draft_size and img.format == "JPEG":
                    img.draft(None, (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(path, f"decompression bomb refused: {e}") from None
    except FileNotFoundError:
        raise BadImage(path, "file not found") from None
    except Image.UnidentifiedImageError:
        raise BadImage(path, "not an image (empty, unknown format or corrupt header)") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise BadImage(path, f"{type(e).__name__}: {e}") from None


# ---- the image files of paths a user gives (predict, calibration folders) ----


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; folders -> their image files (recursively, sorted). Missing paths are kept
    (reported as unreadable later) so one typo does not hide the other results."""
    out, empty = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, f)
                for root, _, files in os.walk(p)
                for f in files
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                empty.append(p)
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise UserError(f"no images in {', '.join(paths)}")
    for p in empty:
        print(f"convzoo predict: warning: no images in folder {p}", file=sys.stderr)
    return out
