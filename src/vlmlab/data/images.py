"""Image loading and preprocessing with PIL/numpy: resize or square letterbox, then normalize."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlmlab.errors import DataError, printable


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB; a missing, truncated, unreadable or non-image file, or one so large it would be a
    decompression bomb (PIL's limit, ~179 megapixels), is a DataError naming the file."""
    if not isinstance(path, (str, Path)):
        raise DataError(f"{path!r}: not an image path")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in str(path)):
        raise DataError(f"{printable(str(path))}: an image path with a control character")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except PermissionError:
        raise DataError(f"{path}: image not readable (permission denied)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int]:
    """(scale, pad_left, pad_top) that fit a width x height image centred in a size x size square."""
    new_w, new_h = letterbox_size(width, height, size)
    return size / max(width, height), (size - new_w) // 2, (size - new_h) // 2


def letterbox_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The pasted image's (width, height) in the size x size square: the longer side fills it, the shorter is
    scaled alike and rounded, but kept at least 1 pixel (a 3x640 image at size 64 is 1x64, not 0x64)."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_array(img: Image.Image, size: int, geometry: str) -> np.ndarray:
    """RGB uint8 array (size, size, 3) after `resize` (stretch) or `letterbox-square` (pad, keep aspect)."""
    if geometry == "resize":
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        return np.asarray(img, dtype=np.uint8)
    _, left, top = letterbox_geometry(img.width, img.height, size)
    new_w, new_h = letterbox_size(img.width, img.height, size)
    canvas = Image.new("RGB", (size, size), (127, 127, 127))
    canvas.paste(img.resize((new_w, new_h), Image.BICUBIC), (left, top))
    return np.asarray(canvas, dtype=np.uint8)


def normalize(batch_uint8: np.ndarray, mean, std) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalized by per-channel mean/std."""
    x = batch_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def project_box(box, width: int, height: int, size: int, geometry: str) -> list[float]:
    """A box (x1, y1, x2, y2) in the pixels of a width x height image -> the same box in 0-100 units of
    the size x size image `to_array` makes: `resize` stretches each axis, `letterbox-square` scales and
    pads exactly as the pixels are (a box on the grey padding is impossible)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if geometry == "resize":
        return [100 * x1 / width, 100 * y1 / height, 100 * x2 / width, 100 * y2 / height]
    if geometry != "letterbox-square":
        raise ValueError(f"unknown image geometry {geometry!r}")
    _, left, top = letterbox_geometry(width, height, size)
    new_w, new_h = letterbox_size(width, height, size)
    sx, sy = new_w / width, new_h / height  # the pasted image's real scale
    return [
        100 * (left + x1 * sx) / size,
        100 * (top + y1 * sy) / size,
        100 * (left + x2 * sx) / size,
        100 * (top + y2 * sy) / size,
    ]


def unproject_box(box, width: int, height: int, size: int, geometry: str) -> list[float]:
    """The inverse of `project_box`: a box in 0-100 units of the processed size x size image -> the original
    width x height image's pixels (a box on letterbox padding lands outside the image; it is not clipped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if geometry == "resize":
        return [x1 * width / 100, y1 * height / 100, x2 * width / 100, y2 * height / 100]
    if geometry != "letterbox-square":
        raise ValueError(f"unknown image geometry {geometry!r}")
    _, left, top = letterbox_geometry(width, height, size)
    new_w, new_h = letterbox_size(width, height, size)
    sx, sy = new_w / width, new_h / height
    return [
        (x1 * size / 100 - left) / sx,
        (y1 * size / 100 - top) / sy,
        (x2 * size / 100 - left) / sx,
        (y2 * size / 100 - top) / sy,
    ]


def grid_to_units(box) -> list[float]:
    """A box answer in the integer 0-99 grid (`format_box`) -> 0-100 units (99 is the far edge, 100)."""
    return [float(v) * 100 / 99 for v in box]


def format_box(box) -> str:
    """A 0-100 box as answer text `[x1, y1, x2, y2]` in integers 0-99, the shapes-world convention:
    floor(v * 99 / 100 + 1/2), clamped to 0-99 (a whole-image box is `[0, 0, 99, 99]`)."""
    coords = [min(99, max(0, math.floor(float(v) * 99 / 100 + 0.5 + 1e-9))) for v in box]
    return "[" + ", ".join(str(c) for c in coords) + "]"
