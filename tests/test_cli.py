"""Command-line parsing, the authkey, and the exit-2 paths that need no crawl."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from crawler.cli import main, parse_size, read_authkey
from crawler.errors import UsageError
from tests.conftest import run_crawler


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1234", 1234),
        ("500K", 500 * 1024),
        ("10M", 10 * 1024**2),
        ("1G", 1024**3),
        ("1.5m", int(1.5 * 1024**2)),
        ("2KB", 2048),
        ("3MiB", 3 * 1024**2),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10Q", "-5", "1.2.3M"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--max-bytes", "12Q"], "not a size"),
        (["run", "--threads", "0"], "invalid a positive whole number value"),
        (["run", "--timeout", "-1"], "invalid a positive number value"),
        (["worker", "--connect", "nowhere"], "expected HOST:PORT, got 'nowhere'"),
        (["master", "--bind", "127.0.0.1:70000"], "expected HOST:PORT, got '127.0.0.1:70000'"),
        (["explode"], "invalid choice"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("crawler: error:") and message in error


def test_authkey_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLER_AUTHKEY", "s3cret\n")
    assert read_authkey(None) == b"s3cret"


def test_authkey_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRAWLER_AUTHKEY", raising=False)
    with pytest.raises(UsageError, match="no authkey"):
        read_authkey(None)


def test_authkey_file_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("abc\n")
    key.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        read_authkey(key)
    key.chmod(0o600)
    assert read_authkey(key) == b"abc"
    with pytest.raises(UsageError, match="cannot read authkey file"):
        read_authkey(tmp_path / "absent")


def test_missing_seeds_file_exits_2(tmp_path: Path) -> None:
    done = run_crawler("run", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"crawler: error: cannot read seeds file {tmp_path / 'nope.txt'}: No such file or directory"
    ]


def test_no_valid_url_exits_2(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# nothing\nftp://example.com/a\n\n")
    done = run_crawler("run", str(seeds), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "crawler: error: no valid URL in the seeds file" in done.stderr
    assert "line 2: invalid URL: scheme ftp:" in done.stderr
    assert len(done.stderr.splitlines()) == 1  # one line, nothing recorded
    assert "Traceback" not in done.stderr


def test_unusable_output_folder_exits_2(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://127.0.0.1:9/a.png\n")
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    done = run_crawler("run", str(seeds), "-o", str(blocker))
    assert done.returncode == 2
    assert f"crawler: error: output folder {blocker} is not usable" in done.stderr
    assert "Traceback" not in done.stderr


def test_master_on_a_busy_port_exits_2(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://127.0.0.1:9/a.png\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_crawler(
            "master", str(seeds), "-o", str(tmp_path / "out"), "--bind", f"127.0.0.1:{port}", authkey="k"
        )
    assert done.returncode == 2
    assert f"crawler: error: address 127.0.0.1:{port} is already in use" in done.stderr


def test_worker_without_master_gives_up_with_exit_2(tmp_path: Path) -> None:
    with socket.socket() as nobody_listens:  # bound, so no other process can take the port meanwhile
        nobody_listens.bind(("127.0.0.1", 0))
        port = nobody_listens.getsockname()[1]
        done = run_crawler(
            "worker",
            "--connect",
            f"127.0.0.1:{port}",
            "--connect-timeout",
            "0.5",
            "-o",
            str(tmp_path / "out"),
            authkey="k",
        )
    assert done.returncode == 2
    assert f"crawler: error: no master at 127.0.0.1:{port} after 0.5 s" in done.stderr


def test_version() -> None:
    done = run_crawler("--version")
    assert done.returncode == 0 and done.stdout.startswith("crawler ")
    assert os.path.basename(done.args[0]).startswith("python")


def test_a_corrupt_crawl_state_exits_2_with_one_line(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://127.0.0.1:9/a.png\n")
    (tmp_path / "out" / ".crawler").mkdir(parents=True)
    (tmp_path / "out" / ".crawler" / "state.db").write_bytes(b"garbage" * 100)
    done = run_crawler("run", str(seeds), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"crawler: error: cannot use the crawl state {tmp_path / 'out' / '.crawler' / 'state.db'}: "
        "file is not a database"
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--header", "Host: evil.example"], "the Host header cannot be set"),
        (["--header", "Range: bytes=0-10"], "the Range header cannot be set"),
        (["--header", "no colon"], "not a header"),
        (["--cookies", "/nonexistent/cookies.txt"], "cannot read cookies file /nonexistent/cookies.txt"),
        (["--netrc-file", "/nonexistent/netrc"], "no netrc file at /nonexistent/netrc"),
        (["--min-free", "lots"], "not a size: 'lots'"),
    ],
)
def test_bad_request_options_exit_2_with_one_line(tmp_path: Path, options: list[str], message: str) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://127.0.0.1:9/a.png\n")
    done = run_crawler("run", str(seeds), "-o", str(tmp_path / "out"), *options)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("crawler: error: ") and message in line, line


def test_the_master_stops_with_exit_2_before_its_disk_is_full(small_disk: Path) -> None:
    seeds = small_disk.parent / "seeds.txt"
    seeds.write_text("http://127.0.0.1:9/a.png\n")
    done = run_crawler("run", str(seeds), "-o", str(small_disk / "out"), "-w", "1", "--min-free", "2M")
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    where = re.escape(str(small_disk / "out"))
    assert re.match(rf"crawler: error: only \d+ bytes free in {where}, below --min-free \(2097152 bytes\)", last), last
    assert "Traceback" not in done.stderr
