"""URL tables as seeds: CSV, TSV, JSON lines, Parquet and gzip; kept columns; bad rows; missing columns."""

from __future__ import annotations

import gzip
import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from crawler.errors import UsageError
from crawler.seeds import SeedLine
from crawler.tables import InputSpec, input_format, open_input
from tests.conftest import run_crawler

SPEC = InputSpec("csv", "url", ("caption", "license"))


def read(path: Path, spec: InputSpec) -> list[SeedLine]:
    with open_input(str(path), spec) as source:
        return list(source)


def columns(line: SeedLine) -> dict[str, object]:
    assert line.columns is not None
    return dict(json.loads(line.columns))


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("a.csv", None, "csv"),
        ("A.CSV.GZ", None, "csv"),
        ("b.tsv", None, "tsv"),
        ("c.jsonl.gz", None, "jsonl"),
        ("d.parquet", None, "parquet"),
        ("seeds.txt", None, "txt"),
        ("-", None, "txt"),
        ("list", "csv", "csv"),
    ],
)
def test_the_format_comes_from_the_option_or_the_extension(name: str, explicit: str | None, expected: str) -> None:
    assert input_format(name, explicit) == expected


def test_csv_rows_keep_their_number_and_columns_and_bad_rows_are_refused(tmp_path: Path) -> None:
    table = tmp_path / "images.csv"
    table.write_text(
        "\ufeffid,url,caption,license\n"
        '1,http://Example.com/a.png,"a cat, sitting",cc-by\n'
        "\n"  # a blank line is no row
        "2,,no url here,cc0\n"
        "3,ftp://example.com/b.png,wrong scheme,cc0\n"
        '4,http://example.com/c.png,"broken "quote,cc0\n'
        '5,http://example.com/d.png,"multi\nline",cc-by-sa\n'
        "6,http://example.com/e.png\n",  # short row: the kept columns it lacks are null
        encoding="utf-8",
    )
    lines = read(table, SPEC)
    assert [line.line_number for line in lines] == [1, 2, 3, 4, 5, 6]
    first, no_url, ftp, broken, multiline, short = lines
    assert first.url == "http://example.com/a.png" and first.error is None
    assert columns(first) == {"caption": "a cat, sitting", "license": "cc-by"}
    assert no_url.url is None and no_url.error == "row 2: no URL in column 'url'"
    assert ftp.url is None and ftp.error is not None and "scheme ftp: is not http or https" in ftp.error
    assert broken.url is None and broken.error is not None and broken.error.startswith("row 4: not CSV:")
    assert multiline.url == "http://example.com/d.png" and columns(multiline)["caption"] == "multi\nline"
    assert short.url == "http://example.com/e.png" and columns(short) == {"caption": None, "license": None}


def test_tsv_and_gzip(tmp_path: Path) -> None:
    table = tmp_path / "images.tsv.gz"
    with gzip.open(table, "wt", encoding="utf-8") as file:
        file.write("url\tcaption\nhttp://example.com/1.jpg\tone\nhttp://example.com/2.jpg\ttwo, with a comma\n")
    lines = read(table, InputSpec(input_format(str(table)), "url", ("caption",)))
    assert [(line.url, columns(line)["caption"]) for line in lines] == [
        ("http://example.com/1.jpg", "one"),
        ("http://example.com/2.jpg", "two, with a comma"),
    ]


def test_json_lines_with_any_json_values_and_bad_rows(tmp_path: Path) -> None:
    table = tmp_path / "images.jsonl"
    table.write_text(
        json.dumps({"link": "http://example.com/a.png", "caption": "ü", "license": {"name": "cc-by"}}) + "\n"
        "\n"
        "[1, 2]\n"
        "{not json\n" + json.dumps({"link": 42}) + "\n" + json.dumps({"caption": "no link"}) + "\n",
        encoding="utf-8",
    )
    lines = read(table, InputSpec("jsonl", "link", ("caption", "license")))
    assert [line.line_number for line in lines] == [1, 2, 3, 4, 5]
    good, array, broken, number, missing = lines
    assert good.url == "http://example.com/a.png"
    assert columns(good) == {"caption": "ü", "license": {"name": "cc-by"}}
    assert array.error == "row 2: not a JSON object"
    assert broken.error is not None and broken.error.startswith("row 3: not JSON:")
    assert number.error == "row 4: the URL is a int, not text"
    assert missing.error == "row 5: no URL in column 'link'"


def test_parquet_is_read_a_batch_at_a_time_with_typed_columns(tmp_path: Path) -> None:
    import pyarrow
    import pyarrow.parquet as parquet

    table = tmp_path / "images.parquet"
    urls = [f"http://example.com/{number}.jpg" for number in range(25_000)]
    urls[3] = None  # type: ignore[call-overload]
    parquet.write_table(
        pyarrow.table({"url": urls, "caption": [f"c{n}" for n in range(25_000)], "score": list(range(25_000))}),
        table,
    )
    lines = read(table, InputSpec("parquet", "url", ("caption", "score")))
    assert len(lines) == 25_000 and lines[-1].line_number == 25_000
    assert columns(lines[24_999]) == {"caption": "c24999", "score": 24_999}
    assert lines[3].error == "row 4: no URL in column 'url'"


@pytest.mark.parametrize(
    ("text", "spec", "message"),
    [
        ("link,caption\nhttp://example.com/a\n", SPEC, "has no column 'url' (--url-col); its columns: link, caption"),
        ("url,title\nhttp://example.com/a\n", SPEC, "has no column 'caption' (--save-cols); its columns: url, title"),
        ("", SPEC, "is empty: expected a header line"),
    ],
)
def test_a_table_without_a_column_asked_for_is_refused_before_the_crawl(
    tmp_path: Path, text: str, spec: InputSpec, message: str
) -> None:
    table = tmp_path / "images.csv"
    table.write_text(text)
    with pytest.raises(UsageError, match="^" + str(table).replace(".", r"\.")) as raised:
        open_input(str(table), spec)
    assert message in str(raised.value)


def test_json_lines_without_the_url_key_name_the_keys_they_have(tmp_path: Path) -> None:
    table = tmp_path / "images.jsonl"
    table.write_text(json.dumps({"href": "http://example.com/a", "alt": "x"}) + "\n")
    with pytest.raises(UsageError, match="has no column 'url' \\(--url-col\\); its columns: href, alt"):
        open_input(str(table), InputSpec("jsonl"))


def test_a_missing_file_and_parquet_that_is_not_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read seeds file .*missing\.csv: No such file"):
        open_input(str(tmp_path / "missing.csv"), SPEC)
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"not parquet at all")
    with pytest.raises(UsageError, match=r"cannot read seeds file .*fake\.parquet"):
        open_input(str(fake), InputSpec("parquet"))


def test_a_large_table_is_streamed_not_loaded(tmp_path: Path) -> None:
    table = tmp_path / "big.csv"
    with open(table, "w") as file:
        file.write("url,caption\n")
        for number in range(100_000):
            file.write(f"http://example.com/images/{number}.jpg,a caption that is not short {number}\n")
    size = table.stat().st_size
    tracemalloc.start()
    try:
        with open_input(str(table), InputSpec("csv", "url", ("caption",))) as source:
            count = sum(1 for line in source if line.url)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert size > 6_000_000 and peak < 500_000, (size, peak)  # a row at a time, not the file


def test_a_corrupt_or_cut_gzip_is_one_line_when_it_is_found(tmp_path: Path) -> None:
    not_gzip = tmp_path / "plain.csv.gz"
    not_gzip.write_text("url\nhttp://example.com/a\n")
    with pytest.raises(UsageError, match=r"cannot read seeds file .*plain\.csv\.gz: Not a gzipped file"):
        open_input(str(not_gzip), SPEC)
    rows = "url,caption,license\n" + "".join(f"http://example.com/{n}.jpg,c{n},x\n" for n in range(20_000))
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(rows.encode())[:20_000])
    read_before_the_cut = 0
    cut_found = pytest.raises(UsageError, match=r"cannot read seeds file .*cut\.csv\.gz: Compressed file ended")
    with cut_found, open_input(str(cut), SPEC) as source:
        for _line in source:
            read_before_the_cut += 1
    assert read_before_the_cut > 100  # the rows before the cut were read; the cut is found where it is


def test_kept_columns_need_a_table(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://example.com/a\n")
    with pytest.raises(UsageError, match="--save-cols needs a table"):
        open_input(str(seeds), InputSpec("txt", "url", ("caption",)))


def test_the_command_line_says_a_bad_table_in_one_line_and_exits_2(tmp_path: Path) -> None:
    table = tmp_path / "images.csv"
    table.write_text("link,caption\nhttp://127.0.0.1:9/a.png,x\n")
    done = run_crawler("run", str(table), "-o", str(tmp_path / "out"), "--save-cols", "caption")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"crawler: error: {table} has no column 'url' (--url-col); its columns: link, caption"
    )
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"url\n" + b"http://127.0.0.1:9/x.png\n" * 50_000)[:3000])
    done = run_crawler("run", str(cut), "-o", str(tmp_path / "out2"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"crawler: error: cannot read seeds file {cut}")


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(UsageError, match=r"^reading Parquet needs pyarrow: pip install pyarrow"):
        open_input(str(tmp_path / "images.parquet"), InputSpec("parquet"))
