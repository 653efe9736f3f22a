"""The Redis broker: the frontier kept in a Redis that every machine reaches; nothing pickled.

The master side, :class:`RedisBroker`, implements :class:`~crawler.broker.Broker`;
the worker side, :class:`RedisLink`, implements :class:`~crawler.broker.WorkerLink`.
Between them Redis holds only the window of URLs in play (tasks, per-host
ready lists, leases, retries waiting, results not yet recorded), changed
only by the Lua scripts of :mod:`crawler.broker.redis_scripts`, one round
trip per batch. The crawl state and the manifest stay with the master.

Because Redis outlives the master, a master can die and another take over:

- ``lock`` is held by the live master, renewed every second with a short
  TTL; a second master refuses while it is renewed, and takes over once it
  lapses.
- ``epoch`` names this Redis copy of the crawl; the output folder records it
  too (``.crawler/broker.json``). A master finding the same epoch takes
  over: what is in play stays in play, the results waiting are recorded,
  the backlog skips what Redis already holds. A master that finds the epoch
  gone (Redis restarted empty) feeds again every URL it had in play.
- Results stay in the ``inbox`` until the master has recorded them
  (:meth:`RedisBroker.acknowledge`); one recorded before a crash but not
  yet trimmed is recognised by the state and dropped.

Everything in Redis is JSON or plain numbers (see :mod:`crawler.broker.wire`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionLost, MasterError, MasterUnreachable
from ..links import host_of
from ..messages import Outcome, Policy, Result, Task
from . import BrokerStatus, Delivery, Lease, WindowCounts, WorkerLink, WorkerRow
from . import redis_scripts as scripts
from .redis_conn import BrokerSpec, broker_errors, check_server, open_client
from .wire import MalformedEntry, decode_policy, decode_result, decode_task, encode_policy, encode_result, encode_task

if TYPE_CHECKING:
    import redis

__all__ = ["LOCK_TTL_SECONDS", "RedisBroker", "RedisConnector", "RedisLink"]

logger = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 5.0
"""A master silent this long has died: another may take the crawl over."""
LOCK_RENEW_SECONDS = 1.0
ADD_CHUNK = 2_000
"""Tasks per script call: long enough to cost one round trip per batch, short enough not to stall Redis."""
INBOX_BATCH = 5_000
FULL_TURN, TURN_PAUSE_SECONDS = 500, 0.01
"""A turn that took fewer results than this waits a little before the next (see wait_for_results)."""
POLL_FIRST, POLL_MOST = 0.01, 0.1
"""How often an idle worker asks again for work, at first and at most (Redis cannot block inside a script)."""
STATE_FILE = "broker.json"


class _Scripts:
    """The Lua scripts, registered once per client; redis-py loads them again after a restart."""

    def __init__(self, client: redis.Redis) -> None:
        self.add = client.register_script(scripts.ADD)
        self.add_later = client.register_script(scripts.ADD_LATER)
        self.turn = client.register_script(scripts.TURN)
        self.take = client.register_script(scripts.TAKE)
        self.deliver = client.register_script(scripts.DELIVER)
        self.renew = client.register_script(scripts.RENEW)
        self.release = client.register_script(scripts.RELEASE)
        self.end_leases = client.register_script(scripts.END_LEASES)
        self.is_over = client.register_script(scripts.IS_OVER)
        self.lock = client.register_script(scripts.LOCK)


def _connect(spec: BrokerSpec, patient: bool) -> tuple[redis.Redis, _Scripts]:
    """A checked client: logged in, Redis 6.2 or newer.

    ``patient``: keep trying to reach the broker for the connect timeout (the
    master). A worker's link tries once: the worker's own loop waits and
    tries again (see Worker._connect), and two nested waits would double it.
    """
    client = open_client(spec)
    deadline = time.monotonic() + (spec.connect_timeout if patient else 0.0)
    delay = 0.05
    while True:
        try:
            check_server(client, spec)
            return client, _Scripts(client)
        except MasterUnreachable as error:
            if time.monotonic() + delay > deadline:
                client.close()
                if not patient:
                    raise
                raise MasterUnreachable(f"{error} (for {spec.connect_timeout:g} s)") from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class _MasterLock:
    """The crawl's master lock, renewed by a thread of its own so a long turn of the loop cannot lose it."""

    def __init__(self, client: redis.Redis, lock: Any, spec: BrokerSpec) -> None:
        self._client = client
        self._script = lock
        self._spec = spec
        self._token = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="broker-lock", daemon=True)
        self.lost = False

    def acquire(self) -> None:
        """Take the lock, waiting up to its TTL for a dead master's to lapse; refuse if it is renewed."""
        deadline = time.monotonic() + LOCK_TTL_SECONDS + LOCK_RENEW_SECONDS
        while not self._try():
            if time.monotonic() > deadline:
                raise MasterError(f"crawl {self._spec.crawl} already has a live master at {self._spec.shown}")
            time.sleep(0.2)
        self._thread.start()

    def _try(self) -> bool:
        with broker_errors(self._spec, connecting=True):
            return int(self._script(args=[self._spec.prefix, self._token, int(LOCK_TTL_SECONDS * 1000)])) > 0

    def _keep(self) -> None:
        while not self._stop.wait(LOCK_RENEW_SECONDS):
            try:
                held = self._try()
            except MasterError:
                continue  # the broker is away; the loop notices it too, and the lock is tried again
            if not held:
                logger.error("master: another master took over crawl %s", self._spec.crawl)
                self.lost = True
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(LOCK_RENEW_SECONDS * 2)
        with contextlib.suppress(Exception):
            key = self._spec.prefix + "lock"
            if self._client.get(key) == self._token.encode():
                self._client.delete(key)


class RedisBroker:
    """The master's side: feeds Redis from the backlog, collects results, expires leases."""

    def __init__(
        self,
        spec: BrokerSpec,
        policy: Policy,
        state_folder: Path,
        recorded: Callable[[list[int]], set[int]],
        *,
        per_host: int = 0,
        host_delay: float = 0.0,
    ) -> None:
        """Connect, take the crawl's lock, and open the crawl (fresh, or taken over).

        ``state_folder`` is where the epoch is kept beside the crawl state;
        ``recorded`` tells which URL ids already have a final state there.
        """
        self._spec = spec
        self._p = spec.prefix
        self._policy = policy
        self._config = {
            "lease_ms": int(policy.lease_seconds * 1000),
            "per_host": per_host,
            "delay_ms": int(host_delay * 1000),
            "paced": int(host_delay > 0),
        }
        self._epoch_file = state_folder / STATE_FILE
        self._final_ids = recorded
        self._client, self._scripts = _connect(spec, patient=True)
        self._lock = _MasterLock(self._client, self._scripts.lock, spec)
        self._in_play: dict[int, Task] = {}
        """Every task this master put in Redis whose result or expiry it has not taken yet."""
        self._taken = 0  # inbox entries taken and not yet acknowledged
        self._recorded = 0  # inbox entries acknowledged, to drop with the next take
        self._window = WindowCounts(0, 0, 0, False)  # as of the last turn (see expire_leases)
        self._keys_lost = False
        self._expired: list[bytes] = []  # id, worker, granted of the leases the last turn ended
        self._last_turn = 0  # results the last turn took (acknowledge() keeps it)
        self._skip: set[int] = set()  # results recorded by an earlier master, still in the inbox
        self._lost_since: float | None = None
        try:
            self._lock.acquire()
            self._open_crawl()
        except BaseException:
            self.shutdown()
            raise

    @property
    def address(self) -> str:
        return self._spec.shown

    def start(self) -> None:
        """Workers reach Redis, not the master: nothing to start."""

    # --- opening, taking over, recovering --------------------------------

    def _open_crawl(self) -> None:
        local = self._read_epoch()
        remote, over, closed = self._call(self._client.mget, self._key("epoch"), self._key("over"), self._key("closed"))
        if remote is not None and remote.decode() == local and over is None:
            self._take_over(closed is not None)
            return
        if remote is not None and over is None and self._call(self._client.hlen, self._key("tasks")):
            raise MasterError(
                f"crawl {self._spec.crawl} at {self._spec.shown} belongs to another output folder and is not over; "
                f"use another --crawl name, or delete its keys ({self._p}*)"
            )
        self._start_fresh()

    def _start_fresh(self) -> None:
        """Empty the crawl's keys (but the lock), then write the policy and, last, a new epoch."""
        keep = self._key("lock").encode()
        for keys in self._scan(self._p + "*"):
            doomed = [key for key in keys if key != keep]
            if doomed:
                self._call(self._client.unlink, *doomed)
        self._publish(secrets.token_hex(8))

    def _publish(self, epoch: str) -> None:
        """Write the policy and config; the epoch goes last, since it tells workers the crawl is there."""
        self._batch(
            lambda pipe: (
                pipe.set(self._key("policy"), encode_policy(self._policy)),
                pipe.hset(self._key("config"), mapping=self._config),
                pipe.delete(self._key("closed"), self._key("over")),
                pipe.set(self._key("epoch"), epoch),
            )
        )
        self._write_epoch(epoch)

    def _take_over(self, was_closed: bool) -> None:
        tasks = self._call(self._client.hgetall, self._key("tasks"))
        for key, text in tasks.items():
            with contextlib.suppress(MalformedEntry, ValueError):
                task = decode_task(text)
                if task.id == int(key):
                    self._in_play[task.id] = task
        inbox = self._call(self._client.lrange, self._key("inbox"), 0, -1)
        for entry in inbox:
            with contextlib.suppress(MalformedEntry, ValueError):
                task = decode_task(_split_entry(entry)[1])
                self._in_play.setdefault(task.id, task)
        # A robots.txt task's id is only meaningful to the master that made it.
        foreign = [task_id for task_id in self._in_play if task_id < 0]
        if foreign:
            self._call(self._scripts.end_leases, args=[self._p, *foreign])
        self._skip = self._final_ids([task_id for task_id in self._in_play if task_id > 0]) | set(foreign)
        for task_id in self._skip:
            self._in_play.pop(task_id, None)
        self._batch(
            lambda pipe: (
                pipe.set(self._key("policy"), encode_policy(self._policy)),
                pipe.hset(self._key("config"), mapping=self._config),
                pipe.delete(self._key("closed")),
            )
        )
        logger.warning(
            "master: taking over crawl %s from an earlier master%s: %d URLs in play, %d results waiting",
            self._spec.crawl,
            " (which had been stopped)" if was_closed else "",
            len(self._in_play),
            len(inbox),
        )

    def _recover(self) -> None:
        """Redis lost the crawl's keys (restarted empty): publish again and feed every URL in play."""
        logger.warning(
            "master: the broker at %s lost the crawl (restarted without persistence?); feeding %d URLs again",
            self._spec.shown,
            len(self._in_play),
        )
        tasks = list(self._in_play.values())
        self._in_play.clear()
        self._taken = self._recorded = 0
        self._keys_lost = False
        self.add(tasks)  # no worker takes any before the epoch is back, which _publish writes last
        self._publish(secrets.token_hex(8))

    def _read_epoch(self) -> str | None:
        try:
            data = json.loads(self._epoch_file.read_text())
        except (OSError, ValueError):
            return None
        return str(data.get("epoch")) if isinstance(data, dict) and data.get("crawl") == self._spec.crawl else None

    def _write_epoch(self, epoch: str) -> None:
        temporary = self._epoch_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"crawl": self._spec.crawl, "epoch": epoch}))
        os.replace(temporary, self._epoch_file)

    # --- the Broker interface ---------------------------------------------

    def add(self, tasks: list[Task]) -> None:
        # After a take-over the backlog offers again what Redis already holds: skip it.
        fresh = [task for task in tasks if task.id not in self._in_play]
        for start in range(0, len(fresh), ADD_CHUNK):
            by_host: dict[str, list[object]] = collections.defaultdict(list)
            for task in fresh[start : start + ADD_CHUNK]:
                self._in_play[task.id] = task
                by_host[host_of(task.url)] += (task.id, encode_task(task))
            args: list[object] = [self._p]
            for host, pairs in by_host.items():
                args += (host, len(pairs) // 2, *pairs)
            self._call(self._scripts.add, args=args)
        self._window = self._window._replace(ready=self._window.ready + len(fresh))

    def retry_later(self, task: Task, delay: float) -> None:
        self._in_play[task.id] = task
        args = [self._p, host_of(task.url), task.id, encode_task(task), int(delay * 1000)]
        self._call(self._scripts.add_later, args=args)

    def promote_due(self) -> None:
        """Done in the turn's round trip (see :meth:`take_results`); here, recover if Redis lost the crawl."""
        if self._keys_lost:
            self._recover()

    def set_host_delay(self, host: str, delay: float) -> None:
        self._batch(
            lambda pipe: (
                pipe.hset(self._key("delay"), host, int(delay * 1000)),
                pipe.hset(self._key("config"), "paced", 1),
            )
        )

    def wait_for_results(self, timeout: float) -> None:
        """Wait for a worker's delivery to push ``wake``; while results flow, only pace the turns.

        A turn costs a round trip and the client's work, whatever it brings:
        a trickle of results is gathered for a few milliseconds, a flood not at all.
        """
        if self._lock.lost:
            raise MasterError(f"another master took over crawl {self._spec.crawl} (this one stalled for too long)")
        if not self._last_turn:
            self._call(self._client.blpop, [self._key("wake")], timeout)
        elif self._last_turn < FULL_TURN:
            time.sleep(min(timeout, TURN_PAUSE_SECONDS))

    def take_results(self) -> list[Delivery]:
        """One round trip for the whole turn: the results, and what :meth:`expire_leases` returns next."""
        reply = self._call(self._scripts.turn, args=[self._p, self._recorded, INBOX_BATCH])
        self._recorded = 0
        if reply[0] == -1:
            self._keys_lost = True
            self._taken = self._last_turn = 0
            self._expired = []
            return []
        ready, leased, starved, ended = (int(value) for value in reply[:4])
        self._window = WindowCounts(ready, 0, leased, starved == 1)
        self._expired = reply[4 : 4 + 3 * ended]
        entries = reply[4 + 3 * ended :]
        self._taken = self._last_turn = len(entries)
        deliveries = []
        for entry in entries:
            delivery = self._delivery(entry)
            if delivery is not None:
                deliveries.append(delivery)
        return deliveries

    def _delivery(self, entry: bytes) -> Delivery | None:
        try:
            task_id, task_text, result_text = _split_entry(entry)
        except ValueError:
            logger.warning("master: dropped a malformed entry in the broker's inbox: %r", entry[:100])
            return None
        if task_id in self._skip:
            self._skip.discard(task_id)
            return None
        task = self._in_play.pop(task_id, None)
        if task is None:
            try:
                task = decode_task(task_text)
            except MalformedEntry as error:
                logger.warning("master: dropped a result whose task is malformed (%s): id %d", error, task_id)
                return None
        try:
            result = decode_result(result_text)
            if result.id != task_id:
                raise MalformedEntry(f"result field id: {result.id}, delivered as {task_id}")
        except MalformedEntry as error:
            result = Result(task_id, task.url, Outcome.FAILED, error=f"malformed result in the broker: {error}")
        return Delivery(task, result)

    @property
    def drained(self) -> bool:
        # A turn takes at most INBOX_BATCH entries; fewer means the inbox was emptied.
        return self._last_turn < INBOX_BATCH

    def acknowledge(self) -> None:
        """Note the entries taken as recorded; they leave Redis with the next take (or at the end).

        Should the master die in between, the next one finds them recorded in the state and drops them.
        """
        self._recorded, self._taken = self._taken, 0

    def expire_leases(self) -> list[Lease]:
        """The leases the turn's round trip (in :meth:`take_results`) ended: past their deadline."""
        ended, self._expired = self._expired, []
        leases = []
        for index in range(0, len(ended), 3):
            task = self._in_play.pop(int(ended[index]), None)
            if task is not None:
                worker, granted = ended[index + 1].decode(), int(ended[index + 2]) / 1000
                leases.append(Lease(worker, granted + self._policy.lease_seconds, task, host_of(task.url), granted))
        return leases

    def counts(self) -> WindowCounts:
        """URLs in play as this master knows them; ready, leased and starved as of its last turn."""
        return self._window._replace(in_play=len(self._in_play))

    def status(self) -> BrokerStatus:
        threads, seen, done, waiting, rotation, leases, (seconds, micros) = self._batch(
            lambda pipe: (
                pipe.hgetall(self._key("workers")),
                pipe.hgetall(self._key("seen")),
                pipe.hgetall(self._key("done")),
                pipe.zcard(self._key("waiting")),
                pipe.lrange(self._key("rotation"), 0, 199),
                pipe.hvals(self._key("lease")),
                pipe.time(),
            )
        )
        now = seconds + micros / 1e6
        lease_rows = [text.decode().split("\t") for text in leases]
        held = collections.Counter(row[0] for row in lease_rows)
        workers = [
            WorkerRow(name.decode(), int(threads.get(name, 0)), held[name.decode()], int(done.get(name, 0)),
                      max(0.0, now - int(at) / 1000))
            for name, at in seen.items()
        ]  # fmt: skip
        sizes = self._batch(lambda pipe: [pipe.llen(self._key("q:") + host.decode()) for host in rotation])
        busiest = sorted(((host.decode(), size) for host, size in zip(rotation, sizes, strict=True)), key=_by_size)
        oldest = min((int(row[2]) / 1000 for row in lease_rows), default=None)
        return BrokerStatus(
            workers, int(waiting), len(rotation), busiest[:10], None if oldest is None else now - oldest
        )

    def finish(self) -> None:
        self._drop_recorded()
        self._call(self._client.set, self._key("over"), 1)

    def _drop_recorded(self) -> None:
        if self._recorded:
            self._call(self._client.ltrim, self._key("inbox"), self._recorded, -1)
            self._recorded = 0

    def close(self) -> None:
        self._call(self._client.set, self._key("closed"), 1)

    def workers_not_told(self, active_within: float) -> list[str]:
        seen, told, gone, (seconds, _micros) = self._batch(
            lambda pipe: (
                pipe.hgetall(self._key("seen")),
                pipe.smembers(self._key("told")),
                pipe.smembers(self._key("gone")),
                pipe.time(),
            )
        )
        since = (seconds - active_within) * 1000
        return [name.decode() for name, at in seen.items() if int(at) >= since and name not in told | gone]

    def shutdown(self) -> None:
        # One try, no waiting out an outage: the next master drops what is left (see _take_over).
        if self._recorded:
            with contextlib.suppress(Exception):
                self._client.ltrim(self._key("inbox"), self._recorded, -1)
        self._lock.release()
        self._client.close()

    # --- plumbing -----------------------------------------------------------

    def _key(self, name: str) -> str:
        return self._p + name

    def _scan(self, pattern: str) -> Iterator[list[bytes]]:
        cursor = None
        while cursor != 0:
            cursor, keys = self._call(self._client.scan, cursor or 0, pattern, 1000)
            yield keys

    def _batch(self, build: Callable[[Any], object]) -> list[Any]:
        """Run the commands ``build`` queues on a pipeline (not a transaction): one round trip."""

        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            return list(pipe.execute())

        return self._call(run)  # type: ignore[no-any-return]

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one broker command, waiting out an outage of up to the connect timeout.

        Only used for commands that may run twice: each script either is
        idempotent or leaves Redis as a second run would find it.
        """
        while True:
            try:
                with broker_errors(self._spec):
                    result = method(*args, **kwargs)
            except ConnectionLost as error:
                self._wait_for_broker(error)
                continue
            if self._lost_since is not None:
                logger.warning("master: the broker at %s is back", self._spec.shown)
                self._lost_since = None
            return result

    def _wait_for_broker(self, error: ConnectionLost) -> None:
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
            logger.warning("master: %s; trying again for up to %g s", error, self._spec.connect_timeout)
        elif now - self._lost_since > self._spec.connect_timeout:
            raise MasterError(f"lost the broker: {error} (for {self._spec.connect_timeout:g} s)")
        time.sleep(0.2)


def _split_entry(entry: bytes) -> tuple[int, bytes, bytes]:
    """An inbox entry's id, task and result (see the DELIVER script); ValueError if it is none."""
    header, rest = entry.split(b"\n", 1)
    id_text, length_text = header.split(b"\t")
    length = int(length_text)
    if not 0 <= length <= len(rest):
        raise ValueError("task length out of range")
    return int(id_text), rest[:length], rest[length:]


def _by_size(item: tuple[str, int]) -> int:
    return -item[1]


class RedisLink:
    """A worker's link: the scripts, called with its name; the policy, read from Redis."""

    def __init__(self, spec: BrokerSpec, worker: str, capacity: int) -> None:
        self._spec = spec
        self._p = spec.prefix
        self._worker = worker
        self._capacity = max(1, capacity)
        self._client, self._scripts = _connect(spec, patient=False)
        try:
            with broker_errors(spec, connecting=True):
                epoch, policy = self._client.mget(self._p + "epoch", self._p + "policy")
                if epoch is None or policy is None:
                    raise MasterUnreachable(f"no master has opened {spec.shown} yet")
                self._client.hset(self._p + "workers", worker, self._capacity)
        except BaseException:
            self._client.close()
            raise
        self._policy_text: bytes | str = policy

    def policy(self) -> Policy:
        try:
            return decode_policy(self._policy_text)
        except MalformedEntry as error:
            raise MasterError(f"the crawl's policy at {self._spec.shown} is malformed: {error}") from None

    def empty(self) -> bool:
        return bool(self._run(self._scripts.is_over, self._worker))

    def get(self, block: bool, timeout: float, limit: int, extra: int) -> list[Task]:
        """Lease a batch, asking again every 10-100 ms until ``timeout``; raise queue.Empty if none came."""
        deadline = time.monotonic() + (timeout if block else 0.0)
        pause = POLL_FIRST
        limit, extra = min(limit, self._capacity), min(extra, self._capacity)
        while True:
            reply = self._run(self._scripts.take, self._worker, limit, extra)
            if reply == -1:
                raise ConnectionLost(f"the broker at {self._spec.shown} holds no crawl (restarted empty?)")
            if reply == -2:
                raise queue.Empty
            tasks = self._decode(reply)
            if tasks:
                return tasks
            if time.monotonic() + pause > deadline:
                raise queue.Empty
            time.sleep(pause)
            pause = min(pause * 2, POLL_MOST)

    def _decode(self, reply: list[bytes]) -> list[Task]:
        """The tasks of a reply; a malformed one is failed at once, with the reason, and not returned."""
        tasks, malformed = [], []
        for index in range(0, len(reply), 2):
            try:
                tasks.append(decode_task(reply[index + 1]))
            except MalformedEntry as error:
                logger.warning("worker %s: malformed task %r in the broker: %s", self._worker, reply[index], error)
                with contextlib.suppress(ValueError):  # an id that is no number: its lease will expire
                    reason = f"malformed task in the broker: {error}"
                    malformed.append(Result(int(reply[index]), "", Outcome.FAILED, error=reason, worker=self._worker))
        if malformed:
            self.put(malformed)
        return tasks

    def put(self, results: list[Result]) -> None:
        args: list[object] = []
        for result in results:
            args += (result.id, encode_result(result))
        if self._run(self._scripts.deliver, self._worker, *args) == -1:
            raise ConnectionLost(f"the broker at {self._spec.shown} holds no crawl (restarted empty?)")

    def renew(self, task_ids: list[int]) -> int:
        return max(0, int(self._run(self._scripts.renew, self._worker, *task_ids)))

    def release_all(self, leaving: bool = True) -> int:
        return max(0, int(self._run(self._scripts.release, self._worker, int(leaving))))

    def _run(self, script: Any, *args: object) -> Any:
        with broker_errors(self._spec):
            return script(args=[self._p, *args])


class RedisConnector:
    """Makes :class:`RedisLink` objects for one broker and crawl."""

    def __init__(self, spec: BrokerSpec) -> None:
        self._spec = spec

    @property
    def where(self) -> str:
        return self._spec.shown

    def __call__(self, worker: str, capacity: int) -> WorkerLink:
        return RedisLink(self._spec, worker, capacity)
