"""Images made here with Pillow: headers, every resize mode, EXIF, transparency, bad and hostile files."""

from __future__ import annotations

import io
import typing
from pathlib import Path

import pytest
from PIL import Image

from crawler.images import ImageInfo, ImageRejected, read_header, resize
from crawler.messages import Policy


def encoded(image: Image.Image, format: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def photo(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def rgb(image: Image.Image, where: tuple[int, int]) -> tuple[int, int, int]:
    red, green, blue = typing.cast(tuple[int, int, int], image.convert("RGB").getpixel(where))
    return red, green, blue


def saved(tmp_path: Path, data: bytes, name: str = "image") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_header_alone_gives_size_and_format() -> None:
    assert read_header(encoded(photo(640, 480))) == ImageInfo(640, 480, "JPEG")
    assert read_header(encoded(photo(33, 7), "PNG")) == ImageInfo(33, 7, "PNG")
    assert read_header(encoded(photo(10, 20), "WEBP")) == ImageInfo(10, 20, "WEBP")
    assert read_header(b"<html>not an image</html>") is None
    assert read_header(encoded(photo(64, 64))[:20]) is None  # a header cut short


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("keep_ratio", (427, 256)),  # the smaller side becomes 256
        ("keep_ratio_largest", (256, 154)),  # the larger side becomes 256
        ("center_crop", (256, 256)),
        ("border", (256, 256)),
        ("no", (600, 360)),  # re-encoded only
    ],
)
def test_each_resize_mode(tmp_path: Path, mode: str, size: tuple[int, int]) -> None:
    result = resize(saved(tmp_path, encoded(photo(600, 360), "PNG")), Policy(resize=256, resize_mode=mode))
    assert (result.info.width, result.info.height) == size
    assert result.original == ImageInfo(600, 360, "PNG")
    assert result.content_type == "image/jpeg" and result.info.format == "JPEG"
    assert read_header(result.data) == result.info  # the output decodes, at the size it says


def test_border_pads_with_white_and_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    wide = Image.new("RGB", (300, 100), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 100, 100))  # a red left third
    bordered = Image.open(
        io.BytesIO(resize(saved(tmp_path, encoded(wide, "PNG")), Policy(resize=90, resize_mode="border")).data)
    )
    assert bordered.size == (90, 90) and all(channel > 240 for channel in rgb(bordered, (45, 2)))  # white band
    cropped = Image.open(
        io.BytesIO(
            resize(saved(tmp_path, encoded(wide, "PNG"), "c"), Policy(resize=50, resize_mode="center_crop")).data
        )
    )
    red, _green, blue = rgb(cropped, (25, 25))
    assert blue > 200 and red < 60  # the middle is blue: the red left third was cropped away


def test_only_down_never_enlarges(tmp_path: Path) -> None:
    small = saved(tmp_path, encoded(photo(100, 80)))
    assert resize(small, Policy(resize=256, resize_only_down=True)).info[:2] == (100, 80)
    assert resize(small, Policy(resize=256)).info[:2] == (320, 256)


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 20)), (6, (20, 40)), (8, (20, 40)), (3, (40, 20))])
def test_exif_orientation_turns_the_image_upright_and_is_not_kept(
    tmp_path: Path, orientation: int, size: tuple[int, int]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    data = encoded(photo(40, 20), exif=exif.tobytes())
    result = resize(saved(tmp_path, data), Policy(resize_mode="no"))
    assert result.info[:2] == size
    assert Image.open(io.BytesIO(result.data)).getexif() == {}  # metadata stripped


def test_transparency_becomes_white_in_a_jpeg(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    for source in (encoded(clear, "PNG"), encoded(clear.convert("P"), "GIF", transparency=0)):
        result = resize(saved(tmp_path, source), Policy(resize_mode="no"))
        assert all(channel > 240 for channel in rgb(Image.open(io.BytesIO(result.data)), (10, 10)))


def test_a_cmyk_jpeg_and_a_palette_png_become_rgb(tmp_path: Path) -> None:
    cmyk = encoded(Image.new("CMYK", (30, 30), (0, 255, 255, 0)))
    palette = encoded(photo(30, 30).convert("P"), "PNG")
    for source in (cmyk, palette):
        assert Image.open(io.BytesIO(resize(saved(tmp_path, source), Policy(resize=16)).data)).mode == "RGB"


def test_png_and_webp_output(tmp_path: Path) -> None:
    source = saved(tmp_path, encoded(photo(64, 64)))
    assert resize(source, Policy(resize=32, image_format="png")).content_type == "image/png"
    webp = resize(source, Policy(resize=32, image_format="webp"))
    assert webp.content_type == "image/webp" and read_header(webp.data) == ImageInfo(32, 32, "WEBP")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html>hello</html>", "not a decodable image"),
        (encoded(photo(400, 400))[:3000], "not a decodable image"),  # truncated mid-scan
    ],
)
def test_a_body_that_does_not_decode_is_rejected_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=reason):
        resize(saved(tmp_path, data), Policy(resize=64))


def test_filters_reject_tiny_and_elongated_images(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected, match="image too small: 30 x 500"):
        resize(saved(tmp_path, encoded(photo(30, 500))), Policy(resize=64, min_image_size=50))
    with pytest.raises(ImageRejected, match="aspect ratio over --max-aspect-ratio 3: 30 x 500"):
        resize(saved(tmp_path, encoded(photo(30, 500))), Policy(resize=64, max_aspect_ratio=3))


def test_a_decompression_bomb_is_refused_from_its_header_before_any_decoding(tmp_path: Path) -> None:
    # A PNG that says 20,000 x 20,000 (400 megapixels) in a few kilobytes.
    bomb = encoded(Image.new("1", (20_000, 20_000)), "PNG", optimize=True)
    assert len(bomb) < 1_000_000
    with pytest.raises(
        ImageRejected, match="decompression bomb: 20000 x 20000 pixels, more than --max-image-pixels 90000000"
    ):
        resize(saved(tmp_path, bomb), Policy(resize=64))


def test_a_large_jpeg_is_decoded_in_draft_mode_when_the_target_is_small(tmp_path: Path) -> None:
    big = saved(tmp_path, encoded(photo(4000, 3000), quality=50))
    result = resize(big, Policy(resize=256))
    assert result.original == ImageInfo(4000, 3000, "JPEG") and result.info[:2] == (341, 256)


@pytest.mark.parametrize(("size", "expected"), [((2728, 3977), (256, 373)), ((1199, 1324), (256, 283))])
def test_the_target_comes_from_the_full_size_not_the_drafted_one(
    tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    # Draft mode decodes these at 1/8 or 1/4 scale; sizing from that gave a pixel too many or too few.
    result = resize(saved(tmp_path, encoded(photo(*size))), Policy(resize=256))
    assert result.info[:2] == expected
