import hashlib
import os
from pathlib import Path

import pytest

from crawler.mime import extension_for
from crawler.storage import OutputFolder, is_safe_relative, relative_path_for, remove_temp_files

HOSTILE_URLS = [
    "http://example.com/../../etc/passwd",
    "http://example.com/%2e%2e/%2e%2e/etc/passwd",
    "http://example.com/a/%2E%2E%2F%2E%2E%2Fescape",
    "http://example.com/..%5c..%5cwindows%5csystem32",
    "http://example.com/a\\..\\..\\b",
    "http://example.com//etc/passwd",
    "http://example.com/%00nul",
    "http://example.com/" + "x" * 5000,
    "http://example.com/" + "/".join(["d"] * 300) + "/f.png",
    "http://manifest.jsonl/a.png",
    "http://example.com/.hidden",
    "http://example.com/~user/%F0%9F%90%8D.png",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_stay_inside_the_output_folder(tmp_path: Path, url: str) -> None:
    relative = relative_path_for(url, "image/png")
    final = (tmp_path / relative).resolve()
    assert final.is_relative_to(tmp_path.resolve())
    assert not relative.startswith("/") and "\\" not in relative
    assert all(part not in ("", ".", "..") and not part.startswith(".") for part in relative.split("/"))
    assert len(relative) < 800 and all(len(part) <= 80 for part in relative.split("/"))
    assert relative.split("/")[0] not in ("manifest.jsonl", ".crawler")
    with OutputFolder(tmp_path).writer(relative) as file:
        file.write(b"x")
    assert final.read_bytes() == b"x"


def test_names_are_readable_and_deterministic() -> None:
    url = "https://Example.com:8443/images/cats/tabby.JPG"
    relative = relative_path_for(url)
    assert relative == relative_path_for(url)
    assert relative.startswith("example.com_8443/images/cats/tabby.")
    assert relative.endswith(".jpg")


def test_distinct_urls_get_distinct_names() -> None:
    urls = [
        "http://example.com/a.png",
        "http://example.com/a.png?size=1",
        "http://example.com/a.png?size=2",
        "http://example.com/a%20b.png",
        "http://example.com/a_b.png",
        "http://example.com/A.png",
        "http://example.com/a",
        "http://example.com/a/",
        "http://example.com/a/index",
    ]
    assert len({relative_path_for(url, "image/png") for url in urls}) == len(urls)


def test_a_file_name_never_equals_a_folder_of_another_url() -> None:
    file_path = relative_path_for("http://example.com/a.png")
    deeper = relative_path_for("http://example.com/a.png/b.png")
    assert not deeper.startswith(file_path + "/")


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/png", ".png"),
        ("image/jpeg; charset=binary", ".jpg"),
        ("text/html; charset=utf-8", ".html"),
        (None, ""),
        ("application/x-unknown-thing", ""),
    ],
)
def test_extension_comes_from_content_type_when_the_url_has_none(content_type: str | None, extension: str) -> None:
    digest = hashlib.sha256(b"http://example.com/photo").hexdigest()[:10]
    assert extension_for(content_type) == extension
    assert relative_path_for("http://example.com/photo", content_type) == f"example.com/photo.{digest}{extension}"


def test_the_url_extension_wins_over_content_type() -> None:
    assert relative_path_for("http://example.com/x.gif", "image/png").endswith(".gif")


def test_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), OutputFolder(tmp_path).writer("host/file.png") as file:
        file.write(b"half")
        raise RuntimeError("connection reset")
    assert not (tmp_path / "host/file.png").exists()
    assert list((tmp_path / "host").iterdir()) == []


def test_writer_refuses_paths_outside(tmp_path: Path) -> None:
    with pytest.raises(ValueError), OutputFolder(tmp_path).writer("../outside.png"):
        pass
    assert not (tmp_path.parent / "outside.png").exists()


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\..\\b", "a\x00b", ".."])
def test_unsafe_relative_paths_are_recognised(relative: str) -> None:
    assert not is_safe_relative(relative)


def test_every_generated_path_is_safe() -> None:
    assert all(is_safe_relative(relative_path_for(url, "image/png")) for url in HOSTILE_URLS)


def test_remove_temp_files_spares_fresh_ones(tmp_path: Path) -> None:
    old = tmp_path / "host" / ".a.png.123.part"
    fresh = tmp_path / "host" / ".b.png.456.part"
    keep = tmp_path / "host" / "c.png"
    old.parent.mkdir()
    for path in (old, fresh, keep):
        path.write_bytes(b"x")
    os.utime(old, (1, 1))
    assert remove_temp_files(tmp_path, older_than=60) == 1
    assert not old.exists() and fresh.exists() and keep.exists()
