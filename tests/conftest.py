from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import NetnsUnavailable, Network, remove_leftovers
from tests.redis_server import RedisServer
from tests.redis_server import free_port as pick_free_port
from tests.site import Site

ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 60
# Every process a test starts, so that none outlives its test, even a failed one.
STARTED: list[subprocess.Popen[str]] = []
# The stderr file of each process started with one, by pid.
LOGS: dict[int, Path] = {}


@pytest.fixture(autouse=True)
def reap_processes() -> Iterator[None]:
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


class TestBroker:
    """The broker a process test runs on, as the options that choose it."""

    __test__ = False  # not a test class, whatever pytest guesses from its name

    def __init__(self, redis: RedisServer | None = None) -> None:
        self.redis = redis
        self.name = "manager" if redis is None else "redis"

    def master_args(self, bind: str = "127.0.0.1:0") -> list[str]:
        return ["--bind", bind] if self.redis is None else ["--broker", self.redis.url]

    def run_args(self) -> list[str]:
        """Options that put ``crawler run`` on this broker."""
        return [] if self.redis is None else ["--broker", self.redis.url]

    def worker_args(self, address: str) -> list[str]:
        """Options that lead a worker to the master serving on ``address`` (as its log says)."""
        return ["--connect", address] if self.redis is None else ["--broker", self.redis.url]


MANAGER = TestBroker()


@pytest.fixture(params=["manager", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestBroker]:
    """Each test that asks for it runs twice: over the embedded manager, and over a real Redis."""
    if request.param == "manager":
        yield MANAGER
        return
    server = RedisServer(tmp_path / "redis").start()
    yield TestBroker(server)
    server.close()


@pytest.fixture
def network() -> Iterator[Network]:
    """A private network of namespaces (tests/netns.py), torn down after the test, even a failed one.

    Needs CAP_NET_ADMIN; without it the test is skipped, unless CRAWLER_REQUIRE_NETNS is set (as the
    README's test command, so CI, does): then it fails, so a CI run cannot pass without these tests.
    """
    remove_leftovers()
    try:
        made = Network()
    except NetnsUnavailable as error:
        if os.environ.get("CRAWLER_REQUIRE_NETNS"):
            pytest.fail(f"CRAWLER_REQUIRE_NETNS is set but network namespaces cannot be made: {error}")
        pytest.skip(f"needs CAP_NET_ADMIN to make network namespaces: {error}")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs: a write past it comes back short, the next one fails with ENOSPC.

    Mounting needs root (CAP_SYS_ADMIN), which the test machines and CI have.
    """
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def free_port() -> int:
    """A port free a moment ago. Only for what must know a port before anyone binds it
    (a worker started before its master); everything else binds port 0 and reads the port."""
    return pick_free_port()


def crawler_env(authkey: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "CRAWLER_AUTHKEY"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # No disk floor unless a test sets one: the tests must not depend on this machine's free space.
    env["CRAWLER_MIN_FREE"] = "0"
    if authkey is not None:
        env["CRAWLER_AUTHKEY"] = authkey
    return env


def start_crawler(
    *args: str,
    authkey: str | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    log: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python -m crawler ARGS`` with captured output.

    With ``log``, stderr goes to that file, to be read while the process runs.
    With ``new_session``, the process leads its own process group, so a test
    can send a signal to it and its children at once, as a terminal's Ctrl-C does.
    """
    stderr = open(log, "w") if log is not None else subprocess.PIPE
    process = subprocess.Popen(
        [sys.executable, "-m", "crawler", *args],
        env=crawler_env(authkey),
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=new_session,
    )
    if log is not None:
        stderr.close()  # type: ignore[union-attr]
        LOGS[process.pid] = log
    STARTED.append(process)
    return process


def run_crawler(
    *args: str, authkey: str | None = None, cwd: Path | None = None, timeout: float = PROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    process = start_crawler(*args, authkey=authkey, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"crawler {args} did not finish in {timeout} s; stderr:\n{stderr}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def finish(
    process: subprocess.Popen[str], timeout: float = PROCESS_TIMEOUT, input: str | None = None
) -> tuple[int, str]:
    """Wait for a started crawler; return its exit status and stderr (its log file's text, if it has one)."""
    try:
        _stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _stdout, stderr = process.communicate()
        raise AssertionError(f"{process.args!r} did not finish in {timeout} s; stderr:\n{stderr}") from None
    log = LOGS.get(process.pid)
    return process.returncode, log.read_text() if log is not None else stderr
