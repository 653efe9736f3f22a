"""The manager broker and its transport, over real sockets on 127.0.0.1 (port 0: no race for a port)."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from types import FrameType

import pytest

from crawler.broker import WorkerLink
from crawler.broker.manager import ManagerBroker, ManagerConnector
from crawler.broker.transport import MAX_HANDSHAKES, parse_address
from crawler.errors import AddressInUse, AuthenticationFailed, MasterUnreachable
from crawler.messages import Outcome, Policy, Result, Task

KEY = b"key"


@pytest.fixture
def broker() -> Iterator[ManagerBroker]:
    served = ManagerBroker(("127.0.0.1", 0), KEY, Policy(retries=7))
    served.start()
    yield served
    served.shutdown()


def link_to(broker: ManagerBroker, worker: str = "w1", key: bytes = KEY) -> WorkerLink:
    return ManagerConnector(parse_address(broker.address), key)(worker, 4)


def test_a_link_takes_tasks_delivers_results_and_renews(broker: ManagerBroker) -> None:
    broker.add([Task(number, f"http://a.example/{number}", 1) for number in range(1, 4)])
    link = link_to(broker)
    assert link.policy().retries == 7
    tasks = link.get(True, 1.0, 2, 0)
    assert [task.id for task in tasks] == [1, 2]
    assert link.renew([1, 2, 3]) == 2  # 3 is not this worker's
    link.put([Result(tasks[0].id, tasks[0].url, Outcome.OK, attempt=1)])
    [(task, result)] = broker.take_results()
    assert task == tasks[0] and result.outcome == Outcome.OK
    assert not link.empty()
    broker.finish()
    assert link.empty()


class Interrupted(Exception):
    pass


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def test_leases_are_handed_back_after_a_call_was_interrupted_mid_reply(broker: ManagerBroker) -> None:
    broker.add([Task(1, "http://a.example/1", 1)])
    link = link_to(broker)
    assert len(link.get(True, 1.0, 1, 0)) == 1
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            link.get(True, 1.0, 1, 0)  # nothing ready: the master holds this reply for a second
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The interrupted get's reply (queue.Empty) is still on its way on the old connection.
    assert link.release_all() == 1
    assert broker.counts().leased == 0 and broker.counts().ready == 1


def test_a_wrong_key_is_refused_by_name(broker: ManagerBroker) -> None:
    with pytest.raises(AuthenticationFailed, match="the authkey does not match the master's"):
        link_to(broker, key=b"wrong")


def test_an_address_nobody_listens_on_is_unreachable() -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        address = bound_not_listening.getsockname()
        with pytest.raises(MasterUnreachable, match="cannot reach the master"):
            ManagerConnector(address, KEY)("w", 1)


def test_a_busy_port_is_one_clear_error(broker: ManagerBroker) -> None:
    with pytest.raises(AddressInUse, match=f"address {broker.address} is already in use"):
        ManagerBroker(parse_address(broker.address), KEY, Policy())


def test_idle_connections_beyond_the_bound_do_not_keep_a_worker_out(broker: ManagerBroker) -> None:
    idle = [socket.create_connection(parse_address(broker.address)) for _ in range(MAX_HANDSHAKES + 10)]
    try:
        link = link_to(broker)  # the oldest idle handshakes are shed to let it in
        assert not link.empty()
    finally:
        for sock in idle:
            sock.close()
