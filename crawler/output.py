"""The output folder as the master opens it: checked, the state resumed, the manifest ready.

A resumed crawl makes pending again what must be done again (failed URLs,
deleted files, pages to read for deeper links) and removes the temporary
files a crash left behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import OutputError
from .state import CrawlState, Manifest
from .storage import check_output_folder, free_bytes, output_unusable, remove_temp_files

__all__ = ["CrawlOutput"]

logger = logging.getLogger(__name__)


class CrawlOutput:
    """The crawl state and the manifest of one output folder, open for the master."""

    def __init__(self, root: Path, state: CrawlState, manifest: Manifest) -> None:
        self.root = root
        self.state = state
        self.manifest = manifest

    @classmethod
    def open(cls, root: Path, depth: int, lease_seconds: float) -> CrawlOutput:
        """Open (or start) the crawl in ``root``; raise OutputError if the folder cannot be used.

        ``depth`` is this run's: pages whose links a shallower run did not
        follow are read again. Temporary files older than two lease periods
        are removed; younger ones may belong to workers still writing.
        """
        check_output_folder(root)
        try:
            state = CrawlState(root)
        except OSError as error:
            raise output_unusable(root, error) from None
        try:
            reopened = state.reopen_for_resume(root, depth)
            removed = remove_temp_files(root, older_than=2 * lease_seconds)
            manifest = Manifest(root, state)
        except OSError as error:
            state.close()
            raise output_unusable(root, error) from None
        except BaseException:
            state.close()
            raise
        if any(reopened) or removed:
            logger.info(
                "master: resuming: %d failed URLs to retry, %d files missing, %d pages to read for deeper links, "
                "%d temporary files removed",
                *reopened,
                removed,
            )
        return cls(root, state, manifest)

    def check_free_space(self, floor: int) -> None:
        """Raise OutputError when the folder has less than ``floor`` bytes free (0: no floor).

        Stopping here, while the state and the manifest can still be
        written, beats a full disk in the middle of a transaction.
        """
        if not floor:
            return
        free = free_bytes(self.root)
        if free < floor:
            raise OutputError(
                f"only {free} bytes free in {self.root}, below --min-free ({floor} bytes): "
                "free some space and run again (what was not recorded is fetched again)"
            )

    def close(self) -> None:
        try:
            self.manifest.close()
        finally:
            self.state.close()
