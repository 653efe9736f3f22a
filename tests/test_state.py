import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from crawler.errors import OutputError
from crawler.messages import Status
from crawler.state import COLUMNS, MANIFEST_KEYS, SCHEMA, CrawlState, FinalRecord, Manifest


def ok_record(row_id: int, url: str, path: str) -> FinalRecord:
    return FinalRecord(
        id=row_id,
        url=url,
        status=Status.OK,
        path=path,
        bytes=3,
        sha256="abc",
        content_type="image/png",
        http_status=200,
        attempts=1,
        worker="w1",
    )


def test_add_urls_dedups_and_pending_pages_in_id_order(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    assert state.add_urls(["http://a/1", "http://a/2", "http://a/1"]) == 2
    assert state.add_urls(["http://a/2", "http://a/3"]) == 1
    first = state.pending_after(0, 2)
    assert [row.url for row in first] == ["http://a/1", "http://a/2"]
    assert [row.url for row in state.pending_after(first[-1].id, 10)] == ["http://a/3"]


def test_resume_reopens_failed_and_missing_files_but_not_present_ones(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1", "http://a/2", "http://a/3"])
    (tmp_path / "kept.png").write_bytes(b"abc")
    state.save(
        [
            ok_record(1, "http://a/1", "kept.png"),
            ok_record(2, "http://a/2", "deleted.png"),
            FinalRecord.failure("http://a/3", "HTTP 503", attempts=4, row_id=3),
        ]
    )
    state.close()
    reopened = CrawlState(tmp_path)
    assert reopened.reopen_for_resume(tmp_path, depth=0) == (1, 1, 0)
    assert [row.url for row in reopened.pending_after(0, 10)] == ["http://a/2", "http://a/3"]
    assert all(row.attempts == 0 for row in reopened.pending_after(0, 10))
    assert reopened.counts() == {"ok": 1, "pending": 2}


def test_a_deeper_crawl_reopens_the_pages_whose_links_were_not_followed(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/"])
    state.add_urls(["http://a/p1.html", "http://a/x.png"], depth=1, parent="http://a/")
    state.add_urls(["http://a/p2.html"], depth=2, parent="http://a/p1.html")
    html = "text/html; charset=utf-8"

    def page(row_id: int, url: str, content_type: str, depth: int, parent: str | None, followed: bool) -> FinalRecord:
        return FinalRecord(
            id=row_id,
            url=url,
            status=Status.OK,
            content_type=content_type,
            depth=depth,
            parent=parent,
            kept=False,
            links_followed=followed,
        )

    root = page(1, "http://a/", html, 0, None, True)
    edge = page(2, "http://a/p1.html", html, 1, "http://a/", False)
    image = page(3, "http://a/x.png", "image/png", 1, "http://a/", False)
    deep = page(4, "http://a/p2.html", html, 2, "http://a/p1.html", False)
    state.save([root, edge, image, deep])
    assert state.reopen_for_resume(tmp_path, depth=1) == (0, 0, 0)  # the same depth: nothing to read again
    # Depth 2: p1.html (depth 1) must be read for its links; p2.html (depth 2) may stay a leaf.
    assert state.reopen_for_resume(tmp_path, depth=2) == (0, 0, 1)
    assert [row.url for row in state.pending_after(0, 10)] == ["http://a/p1.html"]


def test_manifest_rebuilds_from_the_state(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1", "http://a/2", "http://a/3"])
    state.save([ok_record(1, "http://a/1", "x.png"), FinalRecord.failure("http://a/2", "HTTP 404", 1, row_id=2)])
    Manifest.rebuild(tmp_path, state)
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [(line["url"], line["status"]) for line in lines] == [("http://a/1", "ok"), ("http://a/2", "failed")]
    assert set(lines[0]) >= {
        "url",
        "status",
        "path",
        "bytes",
        "sha256",
        "content_type",
        "http_status",
        "error",
        "attempts",
        "worker",
    }


def test_crawler_manifest_rewrites_it_from_the_state(tmp_path: Path) -> None:
    from crawler.cli import main

    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1", "http://a/2"])
    state.save([ok_record(1, "http://a/1", "x.png")])
    state.close()
    (tmp_path / "manifest.jsonl").write_text("garbage\n")
    assert main(["manifest", "-o", str(tmp_path), "-q"]) == 0
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["url"] for line in lines] == ["http://a/1"]
    assert main(["manifest", "-o", str(tmp_path / "nothing-here"), "-q"]) == 2


def test_a_torn_last_line_is_cut_when_the_manifest_is_opened(tmp_path: Path) -> None:
    whole = json.dumps({"url": "http://a/1", "status": "ok"}) + "\n"
    (tmp_path / "manifest.jsonl").write_text(whole + whole + '{"url": "http://a/2", "sta')
    manifest = Manifest(tmp_path, CrawlState(tmp_path))
    manifest.write([{"url": "http://a/3", "status": "ok"}])
    manifest.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["url"] for line in lines] == ["http://a/1", "http://a/1", "http://a/3"]


def test_a_manifest_of_whole_lines_is_left_alone(tmp_path: Path) -> None:
    text = "".join(json.dumps({"url": f"http://a/{n}"}) + "\n" for n in range(5000))
    (tmp_path / "manifest.jsonl").write_text(text)
    Manifest(tmp_path, CrawlState(tmp_path)).close()
    assert (tmp_path / "manifest.jsonl").read_text() == text


def test_a_manifest_deleted_during_the_crawl_is_written_again_whole(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1", "http://a/2"])
    manifest = Manifest(tmp_path, state)
    first = ok_record(1, "http://a/1", "x.png")
    manifest.write([first.to_manifest()])
    state.save([first])
    (tmp_path / "manifest.jsonl").unlink()
    second = ok_record(2, "http://a/2", "y.png")
    manifest.write([second.to_manifest()])
    state.save([second])
    manifest.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["url"] for line in lines] == ["http://a/1", "http://a/2"]


def test_a_manifest_deleted_after_the_last_batch_is_written_again_on_close(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1"])
    manifest = Manifest(tmp_path, state)
    record = ok_record(1, "http://a/1", "x.png")
    manifest.write([record.to_manifest()])
    state.save([record])
    (tmp_path / "manifest.jsonl").unlink()
    manifest.close()
    assert [json.loads(line)["url"] for line in (tmp_path / "manifest.jsonl").read_text().splitlines()] == [
        "http://a/1"
    ]


def test_a_host_folder_named_like_the_manifests_temporary_file_is_harmless(tmp_path: Path) -> None:
    from crawler.cli import main
    from crawler.storage import OutputFolder, relative_path_for

    relative = relative_path_for("http://manifest.jsonl.tmp/a.png")
    with OutputFolder(tmp_path).writer(relative) as file:
        file.write(b"png")
    state = CrawlState(tmp_path)
    state.add_urls(["http://manifest.jsonl.tmp/a.png"])
    state.save([ok_record(1, "http://manifest.jsonl.tmp/a.png", relative)])
    state.close()
    assert main(["manifest", "-o", str(tmp_path), "-q"]) == 0
    assert main(["manifest", "-o", str(tmp_path), "-q"]) == 0  # and again: the folder is still there
    assert (tmp_path / relative).read_bytes() == b"png"
    [line] = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert json.loads(line)["path"] == relative


class _FullDisk:
    """A connection whose batched writes fail as on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, *args: object) -> sqlite3.Cursor:
        return self._db.execute(*args)  # type: ignore[arg-type]

    def executemany(self, *args: object) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("database or disk is full")


def test_a_failed_state_write_is_one_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    state = CrawlState(tmp_path)
    state.add_urls(["http://a/1"])
    state._db = _FullDisk(state._db)  # type: ignore[assignment]
    with pytest.raises(OutputError, match=r"cannot write the crawl state .*state\.db: database or disk is full"):
        state.save([ok_record(1, "http://a/1", "a.png")])
    assert state.counts() == {"pending": 1}


def test_a_file_that_is_not_a_crawl_state_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".crawler").mkdir()
    (tmp_path / ".crawler" / "state.db").write_bytes(b"not a database" * 100)
    with pytest.raises(OutputError, match=r"cannot use the crawl state .*: file is not a database"):
        CrawlState(tmp_path)


def test_the_table_and_the_manifest_follow_the_record() -> None:
    assert tuple(field.name for field in dataclasses.fields(FinalRecord))[1:] == COLUMNS
    assert set(MANIFEST_KEYS) == set(COLUMNS) - {"links_followed"}
    assert all(f" {name} " in SCHEMA for name in COLUMNS)


def test_a_state_made_before_later_columns_gains_them(tmp_path: Path) -> None:
    (tmp_path / ".crawler").mkdir()
    old = sqlite3.connect(tmp_path / ".crawler" / "state.db")
    old.execute("CREATE TABLE urls (id INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, status TEXT NOT NULL "
                "DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, path TEXT, bytes INTEGER, sha256 TEXT, "
                "content_type TEXT, http_status INTEGER, error TEXT, worker TEXT)")  # fmt: skip
    old.execute("INSERT INTO urls(url, status, path, attempts) VALUES ('http://a/1', 'ok', 'x.png', 1)")
    old.commit()
    old.close()
    [record] = list(CrawlState(tmp_path).final_records())
    assert (record.url, record.status, record.depth, record.kept, record.links_followed) == (
        "http://a/1",
        Status.OK,
        0,
        True,
        False,
    )
