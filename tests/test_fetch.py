"""One attempt at one URL, with HTTP faked by ``responses``."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import typing
import zlib
from pathlib import Path

import pytest
import requests
import responses
from responses import matchers

from crawler import __version__
from crawler.fetch import fetch, make_session, parse_retry_after, prepare_get
from crawler.messages import Policy, Result, Task
from crawler.storage import OutputFolder

URL = "http://images.example/cat.png"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def run(tmp_path: Path, url: str = URL, **policy: object) -> Result:
    chosen = Policy(**policy)  # type: ignore[arg-type]
    with make_session(chosen) as session:
        return fetch(session, Task(7, url, 2), chosen, OutputFolder(tmp_path), "w1")


def files_in(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@responses.activate
def test_saves_the_body_with_its_hash(tmp_path: Path) -> None:
    responses.get(URL, body=PNG, content_type="image/png")
    result = run(tmp_path)
    assert result.outcome == "ok" and result.http_status == 200
    assert (result.id, result.attempt, result.worker) == (7, 2, "w1")
    assert result.bytes == len(PNG) and result.sha256 == hashlib.sha256(PNG).hexdigest()
    assert result.content_type == "image/png"
    assert result.path is not None and (tmp_path / result.path).read_bytes() == PNG
    assert files_in(tmp_path) == [tmp_path / result.path]


@responses.activate
def test_sends_a_user_agent_naming_the_tool(tmp_path: Path) -> None:
    responses.get(URL, body=PNG)
    run(tmp_path)
    run(tmp_path, user_agent="mybot/2")
    assert responses.calls[0].request.headers["User-Agent"] == f"crawler/{__version__}"
    assert responses.calls[1].request.headers["User-Agent"] == "mybot/2"


@pytest.mark.parametrize(("encoding", "encode"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
@responses.activate
def test_decodes_content_encoding(tmp_path: Path, encoding: str, encode) -> None:  # type: ignore[no-untyped-def]
    responses.get(URL, body=encode(PNG), headers={"Content-Encoding": encoding}, content_type="image/png")
    result = run(tmp_path)
    assert result.outcome == "ok"
    assert (tmp_path / str(result.path)).read_bytes() == PNG
    assert result.sha256 == hashlib.sha256(PNG).hexdigest()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451])
@responses.activate
def test_client_errors_fail_at_once(tmp_path: Path, status: int) -> None:
    responses.get(URL, status=status, body=b"no")
    result = run(tmp_path)
    assert result.outcome == "failed" and result.http_status == status
    assert result.error is not None and str(status) in result.error
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@responses.activate
def test_server_errors_and_429_ask_for_a_retry(tmp_path: Path, status: int) -> None:
    responses.get(URL, status=status, headers={"Retry-After": "7"})
    result = run(tmp_path)
    assert result.outcome == "retry" and result.http_status == status and result.retry_after == 7.0
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "error",
    [requests.ConnectionError("refused"), requests.ConnectTimeout("slow"), requests.ReadTimeout("stalled")],
)
@responses.activate
def test_network_errors_and_timeouts_ask_for_a_retry(tmp_path: Path, error: Exception) -> None:
    responses.get(URL, body=error)
    result = run(tmp_path)
    assert result.outcome == "retry" and result.error
    assert files_in(tmp_path) == []


@responses.activate
def test_follows_redirects_and_names_the_file_after_the_requested_url(tmp_path: Path) -> None:
    responses.get(URL, status=301, headers={"Location": "http://cdn.example/x/y/../../../../etc/passwd"})
    responses.get("http://cdn.example/etc/passwd", body=PNG, content_type="image/png")
    result = run(tmp_path)
    assert result.outcome == "ok"
    assert str(result.path).startswith("images.example/cat.")
    assert (tmp_path / str(result.path)).read_bytes() == PNG


@responses.activate
def test_a_redirect_loop_fails(tmp_path: Path) -> None:
    responses.get(URL, status=302, headers={"Location": "http://images.example/other"})
    responses.get("http://images.example/other", status=302, headers={"Location": URL})
    result = run(tmp_path)
    assert result.outcome == "failed" and "more than 10 redirects" in str(result.error)
    assert len(responses.calls) == 11


@responses.activate
def test_a_redirect_to_another_scheme_fails(tmp_path: Path) -> None:
    responses.get(URL, status=302, headers={"Location": "file:///etc/passwd"})
    result = run(tmp_path)
    assert result.outcome == "failed" and "redirect" in str(result.error)
    assert files_in(tmp_path) == []


@responses.activate
def test_declared_length_over_the_limit_fails_before_reading(tmp_path: Path) -> None:
    responses.get(URL, body=PNG, content_type="image/png")
    result = run(tmp_path, max_bytes=1000)
    assert result.outcome == "failed" and "--max-bytes 1000" in str(result.error)
    assert files_in(tmp_path) == []


@responses.activate
def test_streamed_body_over_the_limit_fails_and_keeps_nothing(tmp_path: Path) -> None:
    # No Content-Length, as with a chunked body: only counting while streaming can catch it.
    responses.get(URL, body=PNG, content_type="image/png", auto_calculate_content_length=False)
    result = run(tmp_path, max_bytes=4000, chunk_bytes=1024)
    response = typing.cast(requests.Response, responses.calls[0].response)  # responses types it loosely
    assert "Content-Length" not in response.headers
    assert result.outcome == "failed" and "--max-bytes 4000" in str(result.error)
    assert files_in(tmp_path) == []


@responses.activate
def test_a_body_shorter_than_its_content_length_is_retried(tmp_path: Path) -> None:
    responses.get(URL, body=PNG[:100], headers={"Content-Length": str(len(PNG))}, auto_calculate_content_length=False)
    result = run(tmp_path)
    assert result.outcome == "retry" and result.error
    assert files_in(tmp_path) == []


@responses.activate
def test_content_disposition_cannot_move_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    responses.get(URL, body=PNG, headers={"Content-Disposition": 'attachment; filename="../../evil.sh"'})
    result = run(out)
    assert result.outcome == "ok"
    assert (out / str(result.path)).resolve().is_relative_to(out.resolve())
    assert not any(path.name.startswith("evil") for path in tmp_path.rglob("*"))


@responses.activate
def test_an_unwritable_folder_fails_the_url_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images.example").write_text("a file where a folder should be")
    responses.get(URL, body=PNG)
    result = run(tmp_path)
    assert result.outcome == "failed" and "cannot write file" in str(result.error)


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@responses.activate
def test_a_disk_that_fills_during_the_last_write_fails_the_url(small_disk: Path) -> None:
    # One write of 1.5 MiB onto a 1 MiB tmpfs: the kernel writes what fits and
    # returns a short count; before the fix that count was ignored and a
    # truncated file was renamed into place and recorded ok.
    body = bytes(range(256)) * 6144
    responses.get(URL, body=body)
    result = run(small_disk, chunk_bytes=4 * 1024 * 1024)
    assert (result.outcome, result.error) == ("failed", "cannot write file: No space left on device")
    assert files_in(small_disk) == []


@responses.activate
def test_a_full_disk_fails_the_url_and_leaves_no_partial_file(small_disk: Path) -> None:
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as file:
        file.write(b"x" * 2 * 1024 * 1024)
    responses.get(URL, body=PNG)
    result = run(small_disk)
    assert (result.outcome, result.error) == ("failed", "cannot write file: No space left on device")
    assert files_in(small_disk) == [filler]


@pytest.mark.parametrize("location", ["http://[::1", "gopher://example.com/"])
@responses.activate
def test_a_redirect_to_a_url_requests_cannot_parse_fails_the_url(tmp_path: Path, location: str) -> None:
    responses.get(URL, status=302, headers={"Location": location})
    result = run(tmp_path)
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("bad redirect target: "), result.error
    assert files_in(tmp_path) == []


@responses.activate
def test_an_unexpected_error_inside_fetch_becomes_a_failed_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bool:
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr("crawler.fetch.Keep.keeps", broken)
    responses.get(URL, body=PNG)
    result = run(tmp_path)
    assert (result.outcome, result.attempt, result.worker) == ("failed", 2, "w1")
    assert result.error == "unexpected error: RuntimeError: a bug nobody foresaw"


@responses.activate
def test_a_page_in_a_codec_that_is_not_a_text_encoding_still_gives_its_links(tmp_path: Path) -> None:
    page = b'<a href="/next.html">next</a>'
    responses.get(URL.replace(".png", ".html"), body=page, content_type="text/html; charset=base64")
    result = run(tmp_path, URL.replace(".png", ".html"), depth=1)
    assert result.outcome == "ok", result.error
    assert result.links == ("/next.html",)


@responses.activate
def test_cookies_travel_along_a_urls_redirects_and_not_to_the_next_url(tmp_path: Path) -> None:
    login = "http://images.example/login"
    responses.add(responses.GET, login, status=302, headers={"Location": "/cat.png", "Set-Cookie": "s=abc; Path=/"})
    # Served only to a request carrying the cookie the redirect set.
    responses.add(
        responses.GET, URL, body=PNG, content_type="image/png", match=[matchers.header_matcher({"Cookie": "s=abc"})]
    )
    responses.add(responses.GET, "http://images.example/dog", status=302, headers={"Location": "/dog.png"})
    responses.add(responses.GET, "http://images.example/dog.png", body=PNG, content_type="image/png")
    policy = Policy()
    with make_session(policy) as session:
        first = fetch(session, Task(1, login, 1), policy, OutputFolder(tmp_path), "w1")
        second = fetch(session, Task(2, "http://images.example/dog", 1), policy, OutputFolder(tmp_path), "w1")
    assert first.outcome == "ok" and first.bytes == len(PNG), first.error
    assert second.outcome == "ok" and len(responses.calls) == 4
    assert all("Cookie" not in call.request.headers for call in responses.calls[2:])  # neither request nor hop


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_from_the_environment_is_used(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "/etc/company-ca.pem")
    with make_session(Policy()) as session:
        assert session.verify == "/etc/company-ca.pem"
    monkeypatch.delenv(variable)
    with make_session(Policy()) as session:
        assert session.verify is True


@responses.activate
def test_headers_of_the_policy_go_with_every_request_and_its_redirects(tmp_path: Path) -> None:
    moved = "http://images.example/moved"
    responses.add(responses.GET, moved, status=302, headers={"Location": URL})
    responses.get(URL, body=PNG)
    run(tmp_path, moved, headers=(("X-Api-Key", "k1"), ("User-Agent", "mine/1")))
    for call in responses.calls:
        assert call.request.headers["X-Api-Key"] == "k1"
        assert call.request.headers["User-Agent"] == "mine/1"


@responses.activate
def test_file_cookies_go_where_their_domain_matches_and_nowhere_else(tmp_path: Path) -> None:
    responses.get(URL, body=PNG)
    responses.get("http://elsewhere.example/x.png", body=PNG)
    cookies = ((".images.example", "/", "sid", "abc", False, None),)
    policy = Policy(cookies=cookies)
    with make_session(policy) as session:
        fetch(session, Task(1, URL, 1), policy, OutputFolder(tmp_path), "w1")
        fetch(session, Task(2, "http://elsewhere.example/x.png", 1), policy, OutputFolder(tmp_path), "w1")
        fetch(session, Task(3, URL, 1), policy, OutputFolder(tmp_path), "w1")
    headers = [call.request.headers.get("Cookie") for call in responses.calls]
    assert headers == ["sid=abc", None, "sid=abc"]


@responses.activate
def test_a_redirect_cookie_rides_with_the_file_cookies_but_never_to_the_next_url(tmp_path: Path) -> None:
    login = "http://images.example/login"
    responses.add(responses.GET, login, status=302, headers={"Location": "/cat.png", "Set-Cookie": "s=1; Path=/"})
    responses.get(URL, body=PNG)
    policy = Policy(cookies=((".images.example", "/", "sid", "abc", False, None),))
    with make_session(policy) as session:
        fetch(session, Task(1, login, 1), policy, OutputFolder(tmp_path), "w1")
        fetch(session, Task(2, URL, 1), policy, OutputFolder(tmp_path), "w1")
    cookies = [sorted(str(call.request.headers.get("Cookie")).split("; ")) for call in responses.calls]
    assert cookies == [["sid=abc"], ["s=1", "sid=abc"], ["sid=abc"]]


@responses.activate
def test_basic_auth_of_a_task_goes_to_its_host_and_not_across_a_redirect(tmp_path: Path) -> None:
    away = "http://elsewhere.example/x.png"
    responses.add(responses.GET, URL, status=302, headers={"Location": away})
    responses.get(away, body=PNG)
    policy = Policy()
    with make_session(policy) as session:
        result = fetch(session, Task(1, URL, 1, auth=("ann", "s3cret")), policy, OutputFolder(tmp_path), "w1")
    assert result.outcome == "ok", result.error
    assert responses.calls[0].request.headers["Authorization"] == "Basic YW5uOnMzY3JldA=="
    assert "Authorization" not in responses.calls[1].request.headers


def jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 10)).save(out, "JPEG")
    return out.getvalue()


@responses.activate
def test_a_kept_image_carries_its_size_and_format_and_other_files_none(tmp_path: Path) -> None:
    responses.get(URL, body=jpeg(640, 480), content_type="image/jpeg")
    responses.get("http://images.example/notes.txt", body=b"hello", content_type="text/plain")
    image = run(tmp_path)
    text = run(tmp_path, "http://images.example/notes.txt")
    assert (image.width, image.height, image.image_format) == (640, 480, "JPEG")
    assert (text.width, text.height, text.image_format) == (None, None, None)
    assert image.original_width is None  # nothing was resized


@pytest.mark.parametrize(
    ("header", "strict", "refused"),
    [
        ("noai", False, "noai"),
        ("noindex, noimageai", False, "noimageai"),
        ("noindex", False, None),
        ("noindex", True, "noindex"),
        ("otherbot: noai", False, None),
        ("crawler: noai", False, "noai"),
    ],
)
@responses.activate
def test_an_x_robots_tag_opt_out_keeps_nothing(tmp_path: Path, header: str, strict: bool, refused: str | None) -> None:
    responses.get(URL, body=jpeg(8, 8), content_type="image/jpeg", headers={"X-Robots-Tag": header})
    result = run(tmp_path, x_robots_strict=strict)
    if refused:
        assert (result.outcome, result.error) == ("failed", f"opted out by X-Robots-Tag: {refused}")
        assert files_in(tmp_path) == []
    else:
        assert result.outcome == "ok" and len(files_in(tmp_path)) == 1
    assert run(tmp_path, honor_x_robots=False).outcome == "ok"  # --ignore-x-robots


@responses.activate
def test_resize_writes_only_the_re_encoded_image(tmp_path: Path) -> None:
    responses.get("http://images.example/photo.png", body=jpeg(800, 400), content_type="image/png")
    result = run(tmp_path, "http://images.example/photo.png", resize=100, image_format="webp")
    assert result.outcome == "ok", result.error
    assert (result.width, result.height, result.image_format) == (200, 100, "WEBP")
    assert (result.original_width, result.original_height, result.content_type) == (800, 400, "image/webp")
    assert result.path is not None and result.path.endswith(".webp")
    saved = (tmp_path / result.path).read_bytes()
    assert len(saved) == result.bytes and hashlib.sha256(saved).hexdigest() == result.sha256
    assert files_in(tmp_path) == [tmp_path / result.path]  # no original, no scratch


@responses.activate
def test_resize_of_a_body_that_is_no_image_fails_and_leaves_nothing(tmp_path: Path) -> None:
    responses.get(URL, body=b"<html>surprise</html>", content_type="image/png")
    result = run(tmp_path, resize=100)
    assert result.outcome == "failed" and str(result.error).startswith("not a decodable image")
    assert files_in(tmp_path) == []


def _hook(response: requests.Response, **_kwargs: object) -> requests.Response:
    return response


@pytest.mark.parametrize(
    ("url", "with_cookies", "auth"),
    [
        ("http://example.com/a/b.png?x=1&y=%20z", False, None),
        ("https://user:p%40ss@example.com/private.png", False, None),  # credentials in the URL
        ("http://example.com/a.png", True, ("user", "secret")),
        ("http://bücher.example/ünï cödé.png", False, None),  # IDNA host, a path to quote
        ("http://example.com/path/../a b.png#frag", True, None),
    ],
)
def test_prepare_get_makes_what_requests_prepare_makes(
    url: str, with_cookies: bool, auth: tuple[str, str] | None
) -> None:
    headers = {"User-Agent": "crawler-test", "Accept": "image/*", "X-Extra": "1"}
    jar = requests.cookies.RequestsCookieJar()
    jar.set("session", "abc", domain="example.com", path="/")
    jar.set("elsewhere", "no", domain="other.example", path="/")
    ours = prepare_get(url, headers, jar.copy() if with_cookies else None, auth, _hook)
    theirs = requests.Request(
        "GET", url, headers=headers, cookies=jar.copy() if with_cookies else None, auth=auth, hooks={"response": _hook}
    ).prepare()
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)
    assert ours.hooks["response"] == theirs.hooks["response"] == [_hook]
    assert ("Cookie" in ours.headers) == with_cookies
    assert ("Authorization" in ours.headers) == (auth is not None or "user:" in url)


def test_prepare_get_refuses_what_requests_refuses() -> None:
    for url in ("example.com/no-scheme.png", "http://", "http://[::1/a.png"):
        with pytest.raises(ValueError):
            requests.Request("GET", url).prepare()
        with pytest.raises(ValueError):
            prepare_get(url, {}, None, None, _hook)
