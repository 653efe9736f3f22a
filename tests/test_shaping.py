"""Headers, cookies files, netrc and credentials in URLs: read and checked on the master."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from crawler.errors import UsageError
from crawler.seeds import normalize_url, read_seeds
from crawler.shaping import (
    HostCredentials,
    credentials_in,
    load_cookies,
    load_netrc,
    mask_credentials,
    parse_header,
    read_header_file,
)


def test_a_header_is_a_name_and_a_value() -> None:
    assert parse_header("X-Api-Key:  abc def ") == ("X-Api-Key", "abc def")
    assert parse_header("Authorization: Bearer t0k3n") == ("Authorization", "Bearer t0k3n")


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Range"])
def test_headers_that_would_break_the_crawl_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"the {name} header cannot be set"):
        parse_header(f"{name}: x")


@pytest.mark.parametrize("text", ["no colon here", "Bad Name: x", ": empty"])
def test_what_is_not_a_header_is_refused_without_echoing_a_value(text: str) -> None:
    with pytest.raises(ValueError, match="not a header"):
        parse_header(text)


def test_a_header_file_keeps_secrets_out_of_argv(tmp_path: Path) -> None:
    path = tmp_path / "headers"
    path.write_text("# for the API\nAuthorization: Bearer s3cret\n\nX-Tag: 1\n")
    assert read_header_file(path) == [("Authorization", "Bearer s3cret"), ("X-Tag", "1")]
    path.write_text("Authorization: Bearer s3cret\nHost: evil\n")
    with pytest.raises(UsageError) as refused:
        read_header_file(path)
    assert "Host header cannot be set" in str(refused.value) and "s3cret" not in str(refused.value)


def test_a_netscape_cookies_file_is_read_as_plain_values(tmp_path: Path) -> None:
    path = tmp_path / "cookies.txt"
    path.write_text(
        "# Netscape HTTP Cookie File\n"
        "#HttpOnly_.example.com\tTRUE\t/\tFALSE\t0\tsid\tabc\n"
        "shop.example.org\tFALSE\t/cart\tTRUE\t4102444800\tk\tv\n"
        "old.example.org\tFALSE\t/\tFALSE\t946684800\tgone\tx\n"  # expired in 2000
    )
    assert load_cookies(path) == (
        (".example.com", "/", "sid", "abc", False, None),
        ("shop.example.org", "/cart", "k", "v", True, 4102444800),
    )


def test_a_file_that_is_not_a_cookies_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cookies.json"
    path.write_text('{"sid": "abc"}')
    with pytest.raises(UsageError, match=r"is not a Netscape cookies\.txt file"):
        load_cookies(path)
    with pytest.raises(UsageError, match="cannot read cookies file"):
        load_cookies(tmp_path / "missing.txt")


def test_netrc_machine_entries_are_read_and_the_default_ignored(tmp_path: Path) -> None:
    path = tmp_path / "netrc"
    path.write_text("machine Files.Example.com login ann password s3cret\ndefault login any password leak\n")
    path.chmod(0o600)
    assert load_netrc(path) == {"files.example.com": ("ann", "s3cret")}
    path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others; run: chmod 600"):
        load_netrc(path)


def test_credentials_in_a_url_are_taken_out_and_masked() -> None:
    url = "https://ann:p%40ss@Files.Example.com/a.png"
    assert credentials_in(url) == ("ann", "p@ss")
    assert normalize_url(url) == normalize_url("https://Files.Example.com/a.png") == "https://files.example.com/a.png"
    assert mask_credentials(f"fetch {url} now") == "fetch https://***@Files.Example.com/a.png now"
    [line] = read_seeds(io.StringIO(url + "\n"))
    assert (line.url, line.auth, line.text) == (
        "https://files.example.com/a.png",
        ("ann", "p@ss"),
        mask_credentials(url),
    )
    [bad] = read_seeds(io.StringIO("ftp://ann:s3cret@host/x\n"))
    assert bad.url is None and "s3cret" not in bad.text


def test_credentials_serve_their_host_and_the_first_ones_win() -> None:
    credentials = HostCredentials({"netrc.example": ("n", "1")})
    credentials.learn("seed.example", ("s", "2"))
    credentials.learn("seed.example", ("later", "3"))
    assert credentials.for_url("https://seed.example:8443/x") == ("s", "2")
    assert credentials.for_url("http://netrc.example/") == ("n", "1")
    assert credentials.for_url("http://other.example/") is None
