"""What the user adds to every request: headers, cookies, credentials.

Read and checked on the master, at the start, into plain values: headers
and cookies travel to workers inside the policy, credentials with each task
(they are known per host, and seed URLs may bring new ones while the crawl
runs). Nothing here is ever logged, written to the manifest or stored in the
crawl state; it does travel to the workers over the broker's transport.
"""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import UsageError

__all__ = [
    "SECRET_HEADERS",
    "Cookie",
    "HostCredentials",
    "credentials_in",
    "load_cookies",
    "load_netrc",
    "mask_credentials",
    "parse_header",
]

# A request the crawl builds itself would be wrong with these: the host routes it, the length
# and the transfer encoding frame its body, a range would make every file a fragment.
REFUSED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "range"})
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
USERINFO = re.compile(r"(?<=://)[^/@\s]*@")

Cookie = tuple[str, str, str, str, bool, int | None]
"""(domain, path, name, value, secure, expires): a cookie as plain values for the policy."""


def parse_header(text: str) -> tuple[str, str]:
    """Parse ``NAME: VALUE`` into a pair; raise ValueError with the reason (never the value)."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not TOKEN.match(name):
        raise ValueError(f"not a header (expected 'NAME: VALUE'): {name[:60]!r}")
    if name.lower() in REFUSED_HEADERS:
        raise ValueError(f"the {name} header cannot be set: the crawl sets or needs it as it is")
    if any(char in value for char in "\r\n\x00"):
        raise ValueError(f"the value of {name} holds a line break or a NUL")
    return name, value


def read_header_file(path: Path) -> list[tuple[str, str]]:
    """Headers from a file, one per line, so that a secret never sits in argv (curl's ``-H @file``)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as error:
        raise UsageError(f"cannot read header file {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        return [parse_header(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    except ValueError as error:
        raise UsageError(f"{path}: {error}") from None


def load_cookies(path: Path) -> tuple[Cookie, ...]:
    """Read a Netscape ``cookies.txt`` (browser exports, curl ``-c``, yt-dlp) into plain values."""
    import http.cookiejar  # here: it costs every crawl a fiftieth of a second at start-up, for --cookies

    jar = http.cookiejar.MozillaCookieJar(str(path))
    try:
        # Expiry is checked below: the file format writes 0 for a session cookie, which the jar reads as 1970.
        jar.load(ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError:  # an OSError too: caught first
        raise UsageError(f"{path} is not a Netscape cookies.txt file") from None
    except OSError as error:
        raise UsageError(f"cannot read cookies file {path}: {error.strerror or error}") from None
    now = time.time()
    return tuple(
        (cookie.domain, cookie.path, cookie.name, cookie.value or "", cookie.secure, cookie.expires or None)
        for cookie in jar
        if not cookie.expires or cookie.expires > now
    )


def load_netrc(path: Path) -> dict[str, tuple[str, str]]:
    """Return ``machine`` entries of a netrc file as host -> (login, password).

    The ``default`` entry is ignored: a crawl follows links to hosts nobody
    listed, and would hand them the password. A file others can read is
    refused, as for the authkey.
    """
    import netrc  # here, not at the top: only --netrc needs it

    try:
        mode = path.stat().st_mode
        entries = netrc.netrc(str(path))
    except FileNotFoundError:
        raise UsageError(f"no netrc file at {path}") from None
    except netrc.NetrcParseError as error:
        raise UsageError(f"{path} is not a valid netrc file: line {error.lineno}: {error.msg}") from None
    except OSError as error:
        raise UsageError(f"cannot read netrc file {path}: {error.strerror or error}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"netrc file {path} is readable by others; run: chmod 600 {path}")
    return {
        host.lower(): (login or "", password or "")
        for host, (login, _account, password) in entries.hosts.items()
        if host != "default"  # where the netrc module files the default entry
    }


def credentials_in(url: str) -> tuple[str, str] | None:
    """The (user, password) written in a URL, percent-decoded, or None."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def mask_credentials(text: str) -> str:
    """Replace the ``user:password@`` of URLs in ``text`` with ``***@``, for logs and the manifest."""
    return USERINFO.sub("***@", text)


class HostCredentials:
    """Basic-auth credentials by host, from netrc and from seed URLs; the master's, never stored.

    A URL's credentials serve every URL of its host (as a netrc entry
    would): links found on a page, and the URL when it is tried again.
    The first credentials seen for a host win.
    """

    def __init__(self, entries: dict[str, tuple[str, str]] | None = None) -> None:
        self._by_host = dict(entries or {})

    def __bool__(self) -> bool:
        return bool(self._by_host)

    def learn(self, host: str, credentials: tuple[str, str]) -> None:
        self._by_host.setdefault(host.lower(), credentials)

    def for_url(self, url: str) -> tuple[str, str] | None:
        return self._by_host.get((urlsplit(url).hostname or "").lower())
