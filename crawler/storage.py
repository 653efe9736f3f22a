"""Map a URL to a safe file under the output folder and write it atomically.

Layout: ``DIR/<host>[_<port>]/<path folders>/<stem>.<hash><ext>``. Every name
is built from the URL alone (never from a server's header), sanitised to
``[A-Za-z0-9._-]``, bounded in length, and carries the first 10 hex digits of
the URL's SHA-256, so distinct URLs (query strings included) get distinct
files and no file name can equal a folder name built from another URL's path.
Bodies go to a hidden ``.*.part`` file in the same folder and are renamed into
place only when whole: every write is complete or raises, and the size on
disk is checked against the bytes written before the rename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import OutputError
from .mime import extension_for

__all__ = [
    "TEMP_SUFFIX",
    "FileWriter",
    "OutputFolder",
    "check_output_folder",
    "free_bytes",
    "is_safe_relative",
    "output_unusable",
    "relative_path_for",
    "remove_temp_files",
]

TEMP_SUFFIX = ".part"
MAX_SEGMENT = 60
MAX_FOLDERS = 8
# Top-level names the crawl itself uses; a host folder never takes one. Its
# temporary files live inside .crawler/, and no host folder starts with a dot.
RESERVED_NAMES = {"manifest.jsonl", ".crawler"}
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,6}$")


def _sanitize(segment: str) -> str:
    cleaned = UNSAFE_CHARS.sub("_", segment).strip("_") or "_"
    if cleaned.startswith("."):
        cleaned = "_" + cleaned  # no hidden files, no "." or ".."
    return cleaned[:MAX_SEGMENT]


def _path_segments(path: str) -> list[str]:
    decoded = unquote(path).replace("\\", "/")
    return [part for part in decoded.split("/") if part not in ("", ".", "..")]


def _host_folder(url: str) -> str:
    parts = urlsplit(url)
    folder = _sanitize(parts.hostname or "unknown-host")
    if parts.port:
        folder += f"_{parts.port}"
    return "_" + folder if folder in RESERVED_NAMES else folder


def relative_path_for(url: str, content_type: str | None = None, extension: str | None = None) -> str:
    """Return the file's path relative to the output folder, with ``/`` separators.

    The extension is ``extension`` when given (a re-encoded image's), else
    the URL's last segment's when it has one, else the Content-Type's.
    """
    segments = _path_segments(urlsplit(url).path)
    last = segments.pop() if segments else "index"
    match = EXTENSION.search(last)
    if match and match.start() > 0:
        stem, from_url = last[: match.start()], match.group().lower()
    else:
        stem, from_url = last, extension_for(content_type)
    extension = extension if extension is not None else from_url
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    folders = [_sanitize(segment) for segment in segments[:MAX_FOLDERS]]
    if not EXTENSION.fullmatch(extension):
        extension = ""
    file_name = f"{_sanitize(stem)}.{digest}{extension}"
    return "/".join([_host_folder(url), *folders, file_name])


def is_safe_relative(relative: str) -> bool:
    """Tell whether ``relative`` names a place strictly inside a folder, by its text alone."""
    parts = relative.split("/")
    return (
        bool(relative)
        and "\\" not in relative
        and "\x00" not in relative
        and all(part not in ("", ".", "..") for part in parts)
    )


def output_unusable(root: Path, error: OSError) -> OutputError:
    return OutputError(f"output folder {root} is not usable: {error.strerror or error}")


def check_output_folder(root: Path) -> None:
    """Create ``root`` if needed and prove this process can write there, or raise OutputError.

    Checked before a crawl starts, so a read-only or missing mount is one
    line at once, not a failed result for every URL.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise output_unusable(root, error) from None


def free_bytes(root: Path) -> int:
    """Free space for this process in the file system holding ``root``."""
    return shutil.disk_usage(root).free


class FileWriter:
    """An open temporary file whose ``write`` writes everything or raises.

    A plain unbuffered file returns a short count when the disk fills in
    the middle of a write, and nothing complains if it is ignored: the file
    would be renamed into place truncated and recorded ``ok``.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self._descriptor, view)
            if written <= 0:  # a regular file only does this when it cannot grow
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
        self.size += len(data)
        return len(data)

    def check_whole(self) -> None:
        """Raise unless the file on disk holds exactly what was written."""
        on_disk = os.fstat(self._descriptor).st_size
        if on_disk != self.size:
            raise OSError(errno.EIO, f"{on_disk} bytes on disk, {self.size} written")


class OutputFolder:
    """The output folder as workers write to it: whole files only, never outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Folders this process already made: one mkdir per folder, not per file.
        self._made: set[str] = set()

    @contextmanager
    def writer(self, relative: str) -> Iterator[FileWriter]:
        """Yield a temporary file that becomes ``root/relative`` only on success.

        On any exception the temporary file is removed and nothing appears
        under the final name.
        """
        descriptor, temporary, final = self._open_temporary(relative)
        try:
            try:
                file = FileWriter(descriptor)
                yield file
                file.check_whole()
            finally:
                os.close(descriptor)
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextmanager
    def scratch(self, relative: str) -> Iterator[tuple[FileWriter, Path]]:
        """Yield a temporary file beside ``relative`` and its path; it is removed afterwards, always.

        For a body that is only the raw material of what is kept (an image
        to re-encode): it never appears under a final name.
        """
        descriptor, temporary, _final = self._open_temporary(relative)
        try:
            yield FileWriter(descriptor), Path(temporary)
        finally:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _open_temporary(self, relative: str) -> tuple[int, str, str]:
        """Open a new hidden ``.part`` file beside ``root/relative``; return it, its path and the final path."""
        if not is_safe_relative(relative):
            raise ValueError(f"refusing to write outside the output folder: {relative}")
        folder, _, name = os.path.join(self.root, relative).rpartition("/")
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temporary = f"{folder}/.{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), temporary, f"{folder}/{name}"


def remove_temp_files(root: Path, older_than: float) -> int:
    """Delete ``.*.part`` files under ``root`` untouched for ``older_than`` seconds.

    The age test spares the temporary files of workers that are still
    writing into a shared output folder while a master restarts.
    """
    removed = 0
    deadline = time.time() - older_than
    for folder, _subfolders, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and modified_at(path) < deadline:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def modified_at(path: Path) -> float:
    """A file's mtime; infinity when it is gone (never old enough to remove)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")
