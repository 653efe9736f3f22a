"""Which worker holds which task, until when.

A plain mapping, not thread-safe: the frontier uses it under its own lock.
A ``dict`` by task id underneath, so that the per-URL operations (grant,
end, membership) run at the speed of a dict; the per-worker ones are here.
"""

from __future__ import annotations

from . import Lease

__all__ = ["Leases"]


class Leases(dict[int, Lease]):
    """Leases by task id."""

    def renew(self, worker: str, task_ids: list[int], deadline: float) -> int:
        """Move to ``deadline`` the leases of ``task_ids`` that ``worker`` holds; return how many."""
        renewed = 0
        for task_id in task_ids:
            lease = self.get(task_id)
            if lease is not None and lease.worker == worker:
                self[task_id] = lease._replace(deadline=deadline)
                renewed += 1
        return renewed

    def held_by(self, worker: str) -> list[Lease]:
        return [lease for lease in self.values() if lease.worker == worker]

    def overdue(self, now: float) -> list[Lease]:
        return [lease for lease in self.values() if lease.deadline <= now]
