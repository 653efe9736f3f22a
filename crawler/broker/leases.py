"""Which worker holds which task, until when.

A plain class, not thread-safe: the frontier calls it under its own lock.
"""

from __future__ import annotations

from ..messages import Task
from . import Lease

__all__ = ["Leases"]


class Leases:
    """Leases by task id."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._leases

    def grant(self, worker: str, task: Task, host: str, deadline: float) -> None:
        self._leases[task.id] = Lease(worker, deadline, task, host)

    def end(self, task_id: int) -> Lease | None:
        return self._leases.pop(task_id, None)

    def renew(self, worker: str, deadline: float) -> int:
        """Move every deadline of ``worker`` to ``deadline``; return how many."""
        renewed = 0
        for task_id, lease in self._leases.items():
            if lease.worker == worker:
                # The heartbeat covers everything a worker holds: one call, whatever its count.
                self._leases[task_id] = lease._replace(deadline=deadline)
                renewed += 1
        return renewed

    def held_by(self, worker: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.worker == worker]

    def overdue(self, now: float) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.deadline <= now]
