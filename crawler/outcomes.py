"""What a result or an expired lease becomes: a final record, or another attempt later.

Plain functions of a task, its result and the policy, so each decision can
be tested without sockets, threads or a clock: the master applies them.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from .links import resolve_links
from .messages import Outcome, Policy, Result, Status, Task
from .mime import is_html
from .rules import Scope
from .state import FinalRecord

__all__ = ["Retry", "final_record", "judge_expired", "judge_result", "links_to_follow", "refused", "retry_delay"]


class Retry(NamedTuple):
    """Hand ``task`` (the next attempt) out again after ``delay`` seconds."""

    task: Task
    delay: float

    @property
    def attempts_made(self) -> int:
        return self.task.attempt - 1


def retry_delay(attempt: int, retry_after: float | None, policy: Policy, rng: random.Random) -> float:
    """Return the seconds to wait before attempt ``attempt + 1``.

    Exponential backoff with full jitter over the upper half; a server's
    Retry-After wins when longer, up to ``policy.retry_after_max``.
    """
    backoff = min(policy.backoff_max, policy.backoff_base * 2.0 ** (attempt - 1))
    # Jitter spreads the retries of URLs that failed together (one host down), so they do not return together.
    delay = backoff * (0.5 + rng.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.retry_after_max))
    return delay


def judge_result(task: Task, result: Result, policy: Policy, rng: random.Random) -> Retry | FinalRecord:
    """A transient failure with attempts left is retried later; anything else is final."""
    if result.outcome == Outcome.RETRY and result.attempt < policy.max_attempts:
        delay = retry_delay(result.attempt, result.retry_after, policy, rng)
        return Retry(task._replace(attempt=result.attempt + 1), delay)
    return final_record(task, result, policy)


def judge_expired(task: Task, policy: Policy) -> Retry | FinalRecord:
    """A lease ran out (the worker died or stalled): hand it out again at once, or give up."""
    if task.attempt < policy.max_attempts:
        # No backoff: the server did nothing wrong, a worker did; another can start at once.
        return Retry(task._replace(attempt=task.attempt + 1), 0.0)
    error = f"no result after {task.attempt} attempts: the worker died or stalled each time"
    return failure(task, error, task.attempt)


def refused(task: Task, reason: str) -> FinalRecord:
    """The record of a URL never fetched (robots.txt said no): no attempt made by this run."""
    return failure(task, reason, task.attempt - 1)


def failure(task: Task, error: str, attempts: int) -> FinalRecord:
    """The record of ``task``'s URL failed without a response worth keeping."""
    return FinalRecord.failure(
        task.url,
        error,
        attempts,
        row_id=task.id,
        depth=task.depth,
        parent=task.parent,
        row=task.row,
        columns=task.columns,
    )


def final_record(task: Task, result: Result, policy: Policy) -> FinalRecord:
    ok = result.outcome == Outcome.OK
    error = result.error
    if result.outcome == Outcome.RETRY:
        error = f"{error} (gave up after {result.attempt} attempts)"
    return FinalRecord(
        id=task.id,
        url=task.url,
        status=Status.OK if ok else Status.FAILED,
        path=result.path,
        bytes=result.bytes if ok else None,
        sha256=result.sha256,
        content_type=result.content_type,
        http_status=result.http_status,
        error=error,
        attempts=result.attempt,
        worker=result.worker,
        depth=task.depth,
        parent=task.parent,
        kept=result.kept,
        width=result.width,
        height=result.height,
        image_format=result.image_format,
        original_width=result.original_width,
        original_height=result.original_height,
        # A page whose links are queued now; a later, deeper run reads the others again.
        links_followed=ok and task.depth < policy.depth and is_html(result.content_type),
        row=task.row,
        columns=task.columns,
    )


def links_to_follow(task: Task, result: Result, policy: Policy, scope: Scope, room: int | None) -> list[str]:
    """The in-scope links of a page to queue one level deeper, at most ``room`` of them (None: no cap)."""
    if not result.links or task.depth >= policy.depth or result.outcome != Outcome.OK:
        return []
    page_url = result.page_url or result.url
    links = [link for link in resolve_links(page_url, result.base, result.links) if scope.allows(link)]
    return links if room is None else links[: max(0, room)]
