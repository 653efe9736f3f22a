"""WebDataset shards on real files: filled, closed and renamed by a worker; accepted whole by the master."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from crawler.broker import Delivery
from crawler.messages import Outcome, Policy, Result, Task
from crawler.shards import ShardBook, ShardGate, sweep_shards
from tests.helpers import Clock


def staged(root: Path, name: str, body: bytes) -> Path:
    path = root / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def sample(number: int, caption: str | None = "a caption") -> tuple[Task, Result]:
    columns = json.dumps({"caption": caption, "license": "cc0"}) if caption is not None else None
    task = Task(number, f"http://example.com/{number}.jpg", 1, row=number * 10, columns=columns)
    result = Result(number, task.url, Outcome.OK, path=f"example.com/{number}.jpg", bytes=5, sha256="ab" * 32)
    return task, result


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}  # type: ignore[union-attr]


def test_a_full_shard_is_renamed_and_only_then_its_results_come_out(tmp_path: Path) -> None:
    book = ShardBook(tmp_path, Policy(shard_size=3))
    outcomes = []
    for number in range(3):
        task, result = sample(number)
        outcomes.append(book.add(task, result, staged(tmp_path, f"{number}.jpg", b"body%d" % number)))
        if number < 2:  # still filling: nothing to send, the sample's lease is held
            assert outcomes[-1] is None and book.held_ids() == list(range(number + 1))
            [part] = (tmp_path / "shards").iterdir()
            assert part.name.endswith(".tar.part")
    results = outcomes[-1]
    assert results is not None and book.held_ids() == []
    [shard] = (tmp_path / "shards").iterdir()
    assert shard.name.endswith(".tar")
    assert [result.path for result in results] == [f"shards/{shard.name}#{number * 10:09d}" for number in range(3)]
    assert {result.shard for result in results} == {f"shards/{shard.name}"}
    assert {result.shard_samples for result in results} == {3}
    files = members(shard)
    assert files["000000010.jpg"] == b"body1"
    assert files["000000010.txt"] == b"a caption"
    meta = json.loads(files["000000010.json"])
    assert meta["url"] == "http://example.com/1.jpg" and meta["key"] == "000000010"
    assert meta["caption"] == "a caption" and meta["license"] == "cc0" and meta["sha256"] == "ab" * 32
    assert not list((tmp_path / "staging").iterdir())  # each staged file is gone once in the shard


def test_a_shard_closes_after_its_seconds_or_when_the_worker_is_idle(tmp_path: Path) -> None:
    clock = Clock()
    book = ShardBook(tmp_path, Policy(shard_size=100, shard_seconds=60), clock=clock)
    task, result = sample(1, caption=None)
    assert book.add(task, result, staged(tmp_path, "1.jpg", b"x")) is None
    assert book.close_if_due(idle=False) is None
    clock.now += 60
    closed = book.close_if_due(idle=False)
    assert closed is not None and len(closed) == 1
    assert "000000010.txt" not in members(tmp_path / str(closed[0].shard))  # no caption column kept
    task, result = sample(2)
    assert book.add(task, result, staged(tmp_path, "2.jpg", b"y")) is None
    closed = book.close_if_due(idle=True)
    assert closed is not None and [result.id for result in closed] == [2]
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 2


def test_a_shard_that_cannot_be_written_sends_its_urls_back_and_leaves_nothing(small_disk: Path) -> None:
    book = ShardBook(small_disk, Policy(shard_size=100))
    retried = None
    added = 0
    while retried is None and added < 10:
        task, result = sample(added)
        # 200 KB each: a few fit in the shard on the 1 MiB disk, then one does not.
        retried = book.add(task, result, staged(small_disk, f"{added}.jpg", bytes(200_000)))
        added += 1
    assert retried is not None and added >= 3  # two samples went in before the disk filled
    assert [result.id for result in retried] == list(range(added))  # the shard's and the new one's
    assert {result.outcome for result in retried} == {Outcome.RETRY}
    assert all(result.error and "cannot write the shard" in result.error for result in retried)
    assert list((small_disk / "shards").iterdir()) == []  # no torn tar, under any name
    assert book.held_ids() == []


def test_abandoning_drops_the_part_file(tmp_path: Path) -> None:
    book = ShardBook(tmp_path, Policy())
    task, result = sample(1)
    book.add(task, result, staged(tmp_path, "1.jpg", b"x"))
    assert book.abandon() == 1
    assert list((tmp_path / "shards").iterdir()) == []


def delivery(number: int, shard: str, samples: int) -> Delivery:
    task, result = sample(number)
    return Delivery(task, result._replace(shard=shard, shard_samples=samples, worker="w"))


def test_the_gate_accepts_a_whole_shard_and_refuses_one_missing_a_sample() -> None:
    gate = ShardGate()
    plain = Delivery(*sample(99))
    rest = gate.sort(
        [delivery(1, "shards/a.tar", 2), plain, delivery(2, "shards/a.tar", 2), delivery(3, "shards/b.tar", 2)]
    )
    assert rest == [plain] and gate.waiting == 3
    verdict = gate.decide()
    assert [(name, samples, worker) for name, samples, worker, _ in verdict.accepted] == [("shards/a.tar", 2, "w")]
    assert [item.task.id for item in verdict.refused] == [3]  # its other sample was had from another shard
    assert gate.waiting == 0


def test_sweeping_removes_shards_never_accepted_and_part_files(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for name in ("kept.tar", "orphan.tar", "torn.tar.part", "notes.txt"):
        tarfile.open(folder / name, "w").close() if name.endswith(".tar") else (folder / name).write_bytes(b"x")
    assert sweep_shards(tmp_path, {"shards/kept.tar"}, older_than=3600) == 0  # all too young
    assert sweep_shards(tmp_path, {"shards/kept.tar"}) == 2
    assert sorted(path.name for path in folder.iterdir()) == ["kept.tar", "notes.txt"]


@pytest.mark.parametrize(("caption", "text"), [("plain", "plain"), ("ünïcödé ✓", "ünïcödé ✓"), ("", ""), (None, "")])
def test_captions_are_utf8_text_and_a_null_one_is_empty(tmp_path: Path, caption: str | None, text: str) -> None:
    book = ShardBook(tmp_path, Policy(shard_size=1))
    task, result = sample(5)
    task = task._replace(columns=json.dumps({"caption": caption}))
    [done] = book.add(task, result, staged(tmp_path, "5.jpg", b"x")) or []
    assert members(tmp_path / str(done.shard))["000000050.txt"].decode() == text
