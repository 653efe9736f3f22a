"""Images on the workers: read what a saved file is, or decode, resize and re-encode it.

Every kept file that is an image gets its width, height and format from its
header alone: :mod:`crawler.sniff` for JPEG, PNG, GIF and WebP, Pillow's lazy
open here for the others (no pixel is decoded). With ``--resize``,
an image is decoded (JPEG in draft mode, at a fraction of full size when the
target is small), turned upright by its EXIF orientation, filtered, resized
as img2dataset does (same mode names and meaning) and re-encoded without its
metadata; only the result is written. Pillow releases the GIL while it
decodes, resizes and encodes, so a worker's download threads share the cores.

A body that is not an image, or that Pillow cannot read, is no error for the
header read (the three keys are null); with ``--resize`` it fails its URL.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import IO, NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError

from .messages import Policy
from .sniff import ImageInfo

__all__ = ["ImageInfo", "ImageRejected", "Resized", "read_header", "resize"]

FORMATS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
# Pillow's own bomb check warns, then raises, at a fixed global size; --max-image-pixels is
# checked here instead, on the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
# One decode per core in this process at a time: more only holds more decoded pixels in memory
# (a 12-megapixel PNG is 36 MB, a few copies more while it is turned and converted), not more speed.
# Downloads go on meanwhile; only decoding waits.
_DECODING = threading.BoundedSemaphore(os.cpu_count() or 1)


class Resized(NamedTuple):
    """A re-encoded image and what it was before."""

    data: bytes
    info: ImageInfo
    original: ImageInfo
    content_type: str


class ImageRejected(Exception):
    """The body cannot become the image the policy asks for; the message is the URL's error."""


def read_header(source: bytes | Path) -> ImageInfo | None:
    """Width, height and format from an image's header by Pillow, or None when it is not a readable image.

    For what :func:`crawler.sniff.sniff` cannot read: formats other than
    JPEG, PNG, GIF and WebP, and a file whose header the first bytes do not hold.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return ImageInfo(image.width, image.height, image.format or "")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def resize(file: IO[bytes] | Path, policy: Policy) -> Resized:
    """Decode, check, turn upright, resize and re-encode an image as ``policy`` says."""
    with _DECODING:
        return _resize(file, policy)


def _resize(file: IO[bytes] | Path, policy: Policy) -> Resized:
    try:
        with Image.open(file) as image:
            original = ImageInfo(image.width, image.height, image.format or "")
            _check_size(original, policy)
            if policy.resize and image.format == "JPEG":
                # Decode at the smallest power-of-two scale still above the target: far less memory and CPU.
                image.draft("RGB", _draft_size(original, policy))
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            # The original's size, upright: draft mode shrank the pixels, not the image meant.
            turned = (upright.width > upright.height) != (image.width > image.height)
            size = (original.height, original.width) if turned else (original.width, original.height)
            result = _fit(_rgb(upright, policy), size, policy)
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageRejected(f"not a decodable image: {error}") from None
    pil_format, content_type = FORMATS[policy.image_format]
    out = io.BytesIO()
    # No exif= and no icc_profile=: the metadata stays behind.
    result.save(out, pil_format, quality=policy.quality)
    return Resized(out.getvalue(), ImageInfo(result.width, result.height, pil_format), original, content_type)


def _check_size(info: ImageInfo, policy: Policy) -> None:
    pixels = info.width * info.height
    if policy.max_image_pixels and pixels > policy.max_image_pixels:
        raise ImageRejected(
            f"decompression bomb: {info.width} x {info.height} pixels, more than --max-image-pixels "
            f"{policy.max_image_pixels}"
        )
    if policy.min_image_size and min(info.width, info.height) < policy.min_image_size:
        raise ImageRejected(f"image too small: {info.width} x {info.height}")
    smaller = max(min(info.width, info.height), 1)
    if policy.max_aspect_ratio and max(info.width, info.height) / smaller > policy.max_aspect_ratio:
        raise ImageRejected(
            f"aspect ratio over --max-aspect-ratio {policy.max_aspect_ratio:g}: {info.width} x {info.height}"
        )


def _scale(width: int, height: int, policy: Policy) -> float:
    """The factor that brings the side --resize-mode names to --resize.

    The smaller side for keep_ratio and center_crop, the larger for
    keep_ratio_largest and border, as in img2dataset.
    """
    side = min(width, height) if policy.resize_mode in ("keep_ratio", "center_crop") else max(width, height)
    return policy.resize / max(side, 1)


def _draft_size(info: ImageInfo, policy: Policy) -> tuple[int, int]:
    """The size draft mode may go down to and still leave enough pixels for the target."""
    scale = _scale(info.width, info.height, policy)
    return max(1, int(info.width * scale)), max(1, int(info.height * scale))


def _rgb(image: Image.Image, policy: Policy) -> Image.Image:
    """A mode the output format takes; transparency goes onto white for JPEG (as img2dataset does)."""
    if policy.image_format != "jpg" and image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        if policy.image_format != "jpg":
            return rgba
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")


def _fit(image: Image.Image, original: tuple[int, int], policy: Policy) -> Image.Image:
    """Resize by img2dataset's modes; with ``resize_only_down``, never enlarge."""
    size, mode = policy.resize, policy.resize_mode
    if not size or mode == "no":
        return image
    width, height = original  # the target comes from the full size, whatever draft mode decoded
    scale = _scale(width, height, policy)
    if policy.resize_only_down and scale > 1:
        scale = 1.0
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    if mode == "center_crop":
        return ImageOps.fit(resized, (min(size, resized.width), min(size, resized.height)), centering=(0.5, 0.5))
    if mode == "border":
        canvas = Image.new(resized.mode, (max(size, resized.width), max(size, resized.height)), _white(resized.mode))
        canvas.paste(resized, ((canvas.width - resized.width) // 2, (canvas.height - resized.height) // 2))
        return canvas
    return resized


def _white(mode: str) -> int | tuple[int, ...]:
    if mode == "L":
        return 255
    if mode == "LA":
        return (255, 255)
    return (255, 255, 255, 255) if mode == "RGBA" else (255, 255, 255)
