import io

import pytest

from crawler.seeds import normalize_url, read_seeds


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


def test_reads_a_stream_without_loading_it_whole() -> None:
    def endless():
        number = 0
        while True:
            number += 1
            yield f"http://example.com/{number}\n"

    seeds = read_seeds(endless())  # type: ignore[arg-type]
    assert next(seeds).url == "http://example.com/1"
    assert next(seeds).url == "http://example.com/2"
