"""Image sizes from first bytes, checked against what Pillow reads of the same images."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from crawler.sniff import ImageInfo, Verdict, sniff


def encoded(format: str, size: tuple[int, int] = (321, 123), mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 90).save(out, format, **options)
    return out.getvalue()


def exif_block(length: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "x" * length
    return exif.tobytes()


@pytest.mark.parametrize(
    ("data", "format"),
    [
        (encoded("JPEG"), "JPEG"),
        (encoded("JPEG", progressive=True), "JPEG"),
        (encoded("JPEG", mode="L"), "JPEG"),
        (encoded("JPEG", mode="CMYK"), "JPEG"),
        (encoded("JPEG", exif=exif_block(20_000)), "JPEG"),  # a long APP1 before the frame
        (encoded("PNG"), "PNG"),
        (encoded("PNG", mode="P"), "PNG"),
        (encoded("GIF", mode="P"), "GIF"),
        (encoded("WEBP", quality=80), "WEBP"),  # lossy: VP8
        (encoded("WEBP", lossless=True), "WEBP"),  # lossless: VP8L
        (encoded("WEBP", mode="RGBA"), "WEBP"),  # with alpha: VP8X
    ],
)
def test_the_size_read_here_is_pillows(data: bytes, format: str) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert sniff(data) == ImageInfo(image.width, image.height, format) == ImageInfo(321, 123, format)


def test_a_body_that_only_starts_like_a_jpeg_is_no_image() -> None:
    jfif = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
    assert sniff(jfif + os.urandom(25_000)) is None
    assert sniff(encoded("JPEG")[:100]) is None  # cut before the frame header, no metadata to blame


def test_other_formats_are_left_to_pillow_and_a_long_header_to_the_whole_file() -> None:
    assert sniff(encoded("BMP")) is Verdict.UNKNOWN
    assert sniff(b"<html></html>") is Verdict.UNKNOWN
    assert sniff(b"") is Verdict.UNKNOWN
    assert sniff(encoded("JPEG", exif=exif_block(20_000))[:10_000]) is Verdict.INCOMPLETE
