import io

import pytest

from crawler.seeds import MAX_LINE, SHOWN_TEXT, normalize_url, read_seeds


def test_skips_blanks_and_comments_strips_whitespace_and_crlf() -> None:
    text = "# header\r\n\r\n   http://Example.COM/a.png  \r\n\t# indented comment\nhttps://b.org\n"
    lines = list(read_seeds(io.StringIO(text, newline=None)))
    assert [(line.line_number, line.url) for line in lines] == [
        (3, "http://example.com/a.png"),
        (5, "https://b.org/"),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("ftp://example.com/file", "scheme ftp: is not http or https"),
        ("file:///etc/passwd", "scheme file: is not http or https"),
        ("javascript:alert(1)", "scheme javascript: is not http or https"),
        ("not a url", "whitespace"),
        ("example.com/a.png", "scheme (none)"),
        ("http://", "no host"),
        ("http://example.com:99999/", "out of range"),
    ],
)
def test_invalid_lines_carry_their_number_and_reason(line: str, reason: str) -> None:
    [seed] = list(read_seeds(io.StringIO(f"http://ok.example/\n{line}\n")))[1:]
    assert seed.line_number == 2
    assert seed.url is None
    assert seed.error is not None and reason in seed.error


def test_normalize_lowercases_scheme_and_host_and_drops_default_port_and_fragment() -> None:
    assert normalize_url("HTTP://Example.com:80/A/B?x=1#frag") == "http://example.com/A/B?x=1"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x") == "https://example.com:8443/x"
    assert normalize_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


class EndlessSeeds:
    """A stream that never ends: reading it whole would never return."""

    def __init__(self) -> None:
        self.number = 0

    def readline(self, size: int | None = -1) -> str:
        self.number += 1
        return f"http://example.com/{self.number}\n"


def test_reads_a_stream_without_loading_it_whole() -> None:
    seeds = read_seeds(EndlessSeeds())  # type: ignore[arg-type]
    assert next(seeds).url == "http://example.com/1"
    assert next(seeds).url == "http://example.com/2"


def test_a_byte_order_mark_does_not_cost_the_first_line() -> None:
    lines = list(read_seeds(io.StringIO("\ufeffhttp://example.com/a\nhttp://example.com/b\n")))
    assert [line.url for line in lines] == ["http://example.com/a", "http://example.com/b"]


def test_a_line_longer_than_the_cap_is_refused_with_its_number_and_the_next_line_is_read() -> None:
    huge = "http://example.com/" + "a" * (MAX_LINE + 10)
    lines = list(read_seeds(io.StringIO(f"http://example.com/1\n{huge}\nhttp://example.com/3\n")))
    assert [(line.line_number, line.url) for line in lines] == [
        (1, "http://example.com/1"),
        (2, None),
        (3, "http://example.com/3"),
    ]
    assert lines[1].error == f"line longer than {MAX_LINE} characters"
    assert len(lines[1].text) == SHOWN_TEXT


def test_a_line_of_exactly_the_cap_is_read() -> None:
    url = "http://example.com/" + "a" * (MAX_LINE - len("http://example.com/"))
    [line] = list(read_seeds(io.StringIO(url)))
    assert line.url == url


def test_international_hosts_are_written_in_their_idna_form() -> None:
    assert normalize_url("http://Bücher.example/x") == "http://xn--bcher-kva.example/x"
    assert normalize_url("http://xn--bcher-kva.example/x") == "http://xn--bcher-kva.example/x"
    assert normalize_url("http://☃.net/") == "http://xn--n3h.net/"


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..example"])
def test_a_host_dns_can_never_resolve_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="invalid host name: label empty or too long"):
        normalize_url(f"http://{host}/")
