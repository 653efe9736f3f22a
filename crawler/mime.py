"""What a Content-Type header says: its media type, a parameter, HTML or not, a file extension.

Parsed here once for the whole package: links (is it a page, in which
charset), rules (is it kept) and storage (which extension) all ask.
"""

from __future__ import annotations

import mimetypes

__all__ = ["extension_for", "is_html", "media_type", "parameter"]

HTML_TYPES = ("text/html", "application/xhtml+xml")
# mimetypes picks the first registered extension, which is often odd (.jpe).
PREFERRED_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/svg+xml": ".svg",
    "image/avif": ".avif",
    "text/html": ".html",
    "text/plain": ".txt",
    "application/json": ".json",
}


def media_type(content_type: str | None) -> str:
    """Return the lower-cased ``type/subtype`` of a Content-Type, or ``""``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parameter(content_type: str | None, name: str) -> str | None:
    """Return a Content-Type parameter's value (``charset``), unquoted, or None."""
    for item in (content_type or "").split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip("'\"")
    return None


def is_html(content_type: str | None) -> bool:
    return media_type(content_type) in HTML_TYPES


def extension_for(content_type: str | None) -> str:
    """Return the usual file extension for a Content-Type, or ``""``."""
    mime = media_type(content_type)
    if not mime:
        return ""
    return PREFERRED_EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ""
