"""Where final states are written down: the manifest first, then the state, and the counts.

The master's single writer of both files. In this order a crash between
the two leaves a URL pending, to be fetched again and given a newer line;
the other order would leave final URLs that the manifest never mentions.
The counts follow what was recorded, so the progress line and the summary
never disagree with the files.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

from .messages import Status
from .outcomes import Retry
from .output import CrawlOutput
from .progress import CrawlCounts
from .seeds import SeedLine
from .state import FinalRecord

__all__ = ["SHOWN_BAD_SEEDS", "Ledger"]

logger = logging.getLogger(__name__)

SHOWN_BAD_SEEDS = 10
"""Bad seed lines logged one by one; past this, one summary line (all are in the manifest)."""
MAX_REASONS = 1000
"""Distinct failure reasons counted; past this, new ones count as one (a hostile server could vary them)."""
OTHER_REASONS = "(other reasons)"


class Ledger:
    """Records final states and attempt counts of one crawl, and counts them."""

    def __init__(self, output: CrawlOutput) -> None:
        self._output = output
        by_status = output.state.counts()
        self.counts = CrawlCounts(ok=by_status.get(Status.OK, 0), failed=by_status.get(Status.FAILED, 0))
        self.counts.known(sum(by_status.values()))
        self.invalid_seeds = 0
        self.bytes_before = output.state.saved_bytes()
        """Saved by earlier runs of this crawl; ``counts.bytes`` is this run's."""
        self.failure_reasons: collections.Counter[str] = collections.Counter()
        self.depth_reached = 0

    def record(
        self,
        finals: list[FinalRecord],
        retries: Sequence[Retry] = (),
        shards: Sequence[tuple[str, int, str]] = (),
        log_failures: bool = True,
    ) -> None:
        """Write final states (manifest, then state), the attempts of URLs that will be retried, and the
        shards accepted (name, samples, worker) with their samples."""
        if not finals and not retries:
            return
        self._output.manifest.write(record.to_manifest() for record in finals)
        self._output.state.save(finals, [(retry.task.id, retry.attempts_made) for retry in retries], shards)
        for record in finals:
            self.counts.finished(record.status == Status.OK, record.bytes)
            self.depth_reached = max(self.depth_reached, record.depth)
            if record.status == Status.FAILED:
                self._count_reason(record.error or "failed")
                if log_failures:
                    logger.warning("failed: %s: %s", record.url, record.error)

    def _count_reason(self, reason: str) -> None:
        reason = reason[:200]
        if reason not in self.failure_reasons and len(self.failure_reasons) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.failure_reasons[reason] += 1

    def record_invalid_seeds(self, lines: list[SeedLine], last_chunk: bool) -> None:
        """Record bad seed lines as failed; log the first few, then one line for the rest."""
        for line in lines:
            self.invalid_seeds += 1
            self._count_reason(line.error or "invalid URL")
            if self.invalid_seeds <= SHOWN_BAD_SEEDS:
                logger.warning("seeds line %d: %s: %s", line.line_number, line.error, line.text[:200])
        self.counts.refused_lines(len(lines))
        if lines:
            # Not in the state (they have no URL to key on): a rebuilt manifest leaves them out.
            self._output.manifest.write(
                FinalRecord.failure(
                    line.text, line.error or "invalid URL", attempts=0, row=line.line_number, columns=line.columns
                ).to_manifest()
                for line in lines
            )
        if last_chunk and self.invalid_seeds > SHOWN_BAD_SEEDS:
            logger.warning(
                "seeds: %d more invalid lines not shown; each is in the manifest as failed",
                self.invalid_seeds - SHOWN_BAD_SEEDS,
            )
