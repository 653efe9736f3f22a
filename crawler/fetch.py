"""Fetch one URL into one file: a single attempt, classified.

Knows nothing of queues or retries: it returns a :class:`Result` whose
outcome is ``ok``, ``failed`` (permanent: 4xx, too large, bad redirect) or
``retry`` (transient: 429, 5xx, network errors, timeouts, truncated bodies,
``--max-time`` or ``--min-speed`` passed), and the master decides what
happens next. It never raises: whatever a server sends, and whatever goes
wrong in here, the attempt ends in a result.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.cookiejar
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import requests
import urllib3

from .errors import first_line
from .links import LinkExtractor
from .messages import Outcome, Policy, Result, Task
from .mime import is_html, media_type
from .rules import Keep, opted_out
from .sniff import ImageInfo, Verdict, sniff
from .storage import FileWriter, OutputFolder, relative_path_for
from .transfer import LimitedAdapter, Transfer, TransferAborted, Watchdog

__all__ = ["fetch", "make_session", "parse_retry_after"]

if TYPE_CHECKING:
    from .shaping import Cookie

logger = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024
"""First bytes of an image kept to read its header from memory, not from the file again."""


class BodyTooLarge(Exception):
    """The body grew past the policy's ``max_bytes``."""


class TruncatedBody(Exception):
    """The connection ended before Content-Length bytes arrived."""


class BadTarget(Exception):
    """The URL, or a redirect's Location, is not one requests can ask for."""


class CrawlSession(requests.Session):
    """A requests session, plus the cookies of ``--cookies`` to start each URL's jar with."""

    file_cookies: requests.cookies.RequestsCookieJar | None = None


def make_session(policy: Policy) -> CrawlSession:
    """Return a session configured for ``policy``; use one per thread.

    Requests go out through :func:`_get` as prepared requests, so the
    environment is read here once, not merged into every request: proxy
    variables (``trust_env`` only when there are some), and a CA bundle
    named by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, as requests does.
    """
    session = CrawlSession()
    for prefix in ("http://", "https://"):
        session.mount(prefix, LimitedAdapter())
    session.trust_env = bool(urllib.request.getproxies())
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.max_redirects = policy.max_redirects
    session.headers["User-Agent"] = policy.agent
    session.headers.update(policy.headers)  # the user's, a User-Agent among them included
    if policy.cookies:
        session.file_cookies = _cookie_jar(policy.cookies)
    # No cookie outlives its URL: what a URL gets must not depend on which
    # thread fetched what before it. Cookies set along one URL's redirects
    # still travel with that URL's request (requests keeps them on it).
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _cookie_jar(cookies: tuple[Cookie, ...]) -> requests.cookies.RequestsCookieJar:
    jar = requests.cookies.RequestsCookieJar()
    for domain, path, name, value, secure, expires in cookies:
        jar.set(name, value, domain=domain, path=path, secure=secure, expires=expires)
    return jar


def _get(session: CrawlSession, task: Task, policy: Policy, transfer: Transfer) -> requests.Response:
    """GET the task's URL as a prepared request.

    Session.get merges the session's settings into every call, which costs
    about 15% of a request's CPU and adds nothing make_session has not set.
    Each URL starts from its own copy of the file's cookies: cookies a server
    sets along one URL's redirects go with them, and with nothing else.
    Basic auth goes to the URL's host only; requests drops it when a
    redirect leaves the host.
    """
    cookies = session.file_cookies.copy() if session.file_cookies is not None else None
    try:
        prepared = prepare_get(task.url, session.headers, cookies, task.auth, transfer.saw_response)
        return session.send(prepared, stream=True, timeout=policy.timeout, allow_redirects=True)
    except ValueError as error:
        # requests' InvalidURL and InvalidSchema are ValueErrors, and a Location
        # such as "http://[::1" raises a bare one from urllib.parse.
        where = "redirect target" if transfer.responses else "URL"
        raise BadTarget(f"bad {where}: {first_line(error)}") from None


def prepare_get(
    url: str,
    headers: Mapping[str, str | bytes],
    cookies: requests.cookies.RequestsCookieJar | None,
    auth: tuple[str, str] | None,
    hook: Callable[..., Any],
) -> requests.PreparedRequest:
    """What ``requests.Request("GET", ...).prepare()`` makes, at a fifth of its CPU (14 against 59 µs).

    A GET has no body, and the headers were checked once, when the command
    line was read; so only the URL, the cookies and the auth are prepared
    here, each by requests' own method. tests/test_fetch.py compares the two.
    """
    prepared = requests.PreparedRequest()
    prepared.method = "GET"
    prepared.prepare_url(url, None)
    # make_session sets only text values; requests' stubs type a session's headers wider than that.
    prepared.headers = requests.structures.CaseInsensitiveDict(cast("Mapping[str, str]", headers))
    # The request keeps this jar: cookies set along its redirects go into it.
    prepared.prepare_cookies(cookies if cookies is not None else requests.cookies.RequestsCookieJar())
    prepared.body = None
    prepared.prepare_auth(auth, url)  # also the user:password a URL may carry
    prepared.hooks = {"response": [hook]}
    return prepared


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the seconds a Retry-After header asks for, or None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def fetch(
    session: CrawlSession,
    task: Task,
    policy: Policy,
    output: OutputFolder,
    worker: str,
    watchdog: Watchdog | None = None,
) -> Result:
    """Download ``task.url`` into ``output`` once and say what came of it.

    With a ``watchdog``, an attempt stuck past ``--max-time`` or under
    ``--min-speed`` is cut even where no chunk arrives to check the limits.
    """
    started = time.monotonic()
    transfer = Transfer(policy.max_time, policy.min_speed, policy.min_speed_time)
    with transfer, watchdog.watching(transfer) if watchdog else contextlib.nullcontext():
        result = _attempt_safely(session, task, policy, output, transfer)
    if transfer.aborted and result.outcome != Outcome.OK:
        # The watchdog shut the socket: what the thread saw is a symptom, not the cause.
        result = Result(task.id, task.url, Outcome.RETRY, error=transfer.aborted)
    return result._replace(attempt=task.attempt, worker=worker, elapsed=time.monotonic() - started)


def _attempt_safely(
    session: CrawlSession, task: Task, policy: Policy, output: OutputFolder, transfer: Transfer
) -> Result:
    try:
        if task.robots:
            return _fetch_robots(session, task, policy, transfer)
        return _attempt(session, task, policy, output, transfer)
    except Exception as error:  # a bug, or a case nobody foresaw: the URL fails, the thread lives
        logger.exception("fetch: unexpected error on %s", task.url)
        return Result(task.id, task.url, Outcome.FAILED, error=f"unexpected error: {_describe(error)}")


def _attempt(session: CrawlSession, task: Task, policy: Policy, output: OutputFolder, transfer: Transfer) -> Result:
    failed = Outcome.FAILED
    retry = Outcome.RETRY
    try:
        with _get(session, task, policy, transfer) as response:
            return _save(response, task, policy, output, transfer)
    except TransferAborted as error:
        return Result(task.id, task.url, retry, error=str(error))
    except requests.TooManyRedirects:
        return Result(task.id, task.url, failed, error=f"more than {policy.max_redirects} redirects")
    except BadTarget as error:
        return Result(task.id, task.url, failed, error=str(error))
    except requests.Timeout:
        return Result(task.id, task.url, retry, error=f"timed out after {policy.timeout:g} s")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        # A host name DNS can never take (a label over 63 characters) is not worth a retry.
        outcome = failed if isinstance(_innermost(error), UnicodeError) else retry
        return Result(task.id, task.url, outcome, error=_describe(error))
    except TruncatedBody as error:
        return Result(task.id, task.url, retry, error=str(error))
    except BodyTooLarge as error:
        return Result(task.id, task.url, failed, error=str(error))
    except OSError as error:
        return Result(task.id, task.url, failed, error=f"cannot write file: {error.strerror or error}")


def _unsuccessful(response: requests.Response, task: Task) -> Result | None:
    """Classify a response that is not a 2xx; None for a 2xx."""
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Result(
            task.id,
            task.url,
            Outcome.RETRY,
            http_status=status,
            error=_status_text(response),
            retry_after=retry_after,
        )
    if not 200 <= status < 300:
        return Result(
            task.id,
            task.url,
            Outcome.FAILED,
            http_status=status,
            error=_status_text(response),
            content_type=response.headers.get("Content-Type"),
        )
    return None


def _save(response: requests.Response, task: Task, policy: Policy, output: OutputFolder, transfer: Transfer) -> Result:
    unsuccessful = _unsuccessful(response, task)
    if unsuccessful is not None:
        return unsuccessful
    content_type = response.headers.get("Content-Type")
    status = response.status_code
    opt_out = _opted_out(response, policy)
    if opt_out:
        error = f"opted out by X-Robots-Tag: {opt_out}"
        return Result(task.id, task.url, Outcome.FAILED, content_type=content_type, http_status=status, error=error)
    extractor = LinkExtractor(content_type) if task.depth < policy.depth and is_html(content_type) else None
    kept = Keep(policy.accept, policy.reject).keeps(task.url, content_type)
    if not kept and extractor is None:
        return Result(task.id, task.url, Outcome.OK, content_type=content_type, http_status=status, kept=False)
    _check_declared_length(response, policy)
    if kept and policy.reencodes:
        return _save_reencoded(response, task, policy, output, transfer, extractor)
    relative = relative_path_for(task.url, content_type)
    head: list[bytes] | None = [] if kept and media_type(content_type).startswith("image/") else None
    if kept:
        with output.writer(relative) as file:
            size, digest = _stream_body(response, policy, transfer, file, extractor, head)
    else:
        size, digest = _stream_body(response, policy, transfer, None, extractor)
    links, base = extractor.close() if extractor else ([], None)
    info = _image_info(head, output.root / relative) if head is not None else None
    return Result(
        task.id,
        task.url,
        Outcome.OK,
        path=relative if kept else None,
        bytes=size,
        sha256=digest,
        content_type=content_type,
        http_status=status,
        kept=kept,
        links=tuple(links),
        base=base,
        page_url=response.url,
        width=info.width if info else None,
        height=info.height if info else None,
        image_format=info.format if info else None,
    )


def _opted_out(response: requests.Response, policy: Policy) -> str | None:
    if not policy.honor_x_robots:
        return None
    return opted_out(response.headers.get("X-Robots-Tag"), policy.agent, policy.x_robots_strict)


def _image_info(head: list[bytes], saved: Path) -> ImageInfo | None:
    """The saved image's size and format, from its first bytes; Pillow only for other formats,
    or for a header longer than the bytes kept (a JPEG's EXIF past 64 KB)."""
    first = head[0] if len(head) == 1 else b"".join(head)
    found = sniff(first)
    if isinstance(found, Verdict):
        from .images import read_header  # Pillow is loaded when an image first needs it

        return read_header(first if found is Verdict.UNKNOWN else saved)
    return found


def _save_reencoded(
    response: requests.Response,
    task: Task,
    policy: Policy,
    output: OutputFolder,
    transfer: Transfer,
    extractor: LinkExtractor | None,
) -> Result:
    """--resize: the body into a scratch file, decoded from there, and only the result written."""
    content_type = response.headers.get("Content-Type")
    status = response.status_code
    from .images import ImageRejected, resize

    with output.scratch(relative_path_for(task.url, content_type)) as (file, path):
        _stream_body(response, policy, transfer, file, extractor)
        try:
            resized = resize(path, policy)
        except ImageRejected as error:
            return Result(
                task.id, task.url, Outcome.FAILED, content_type=content_type, http_status=status, error=str(error)
            )
    relative = relative_path_for(task.url, resized.content_type, extension=f".{policy.image_format}")
    with output.writer(relative) as saved:
        saved.write(resized.data)
    links, base = extractor.close() if extractor else ([], None)
    return Result(
        task.id,
        task.url,
        Outcome.OK,
        path=relative,
        bytes=len(resized.data),
        sha256=hashlib.sha256(resized.data).hexdigest(),
        content_type=resized.content_type,
        http_status=status,
        links=tuple(links),
        base=base,
        page_url=response.url,
        width=resized.info.width,
        height=resized.info.height,
        image_format=resized.info.format,
        original_width=resized.original.width,
        original_height=resized.original.height,
    )


def _fetch_robots(session: CrawlSession, task: Task, policy: Policy, transfer: Transfer) -> Result:
    """Fetch a host's robots.txt for the master: its text, or "" when there is none (4xx)."""
    try:
        with _get(session, task, policy, transfer) as response:
            unsuccessful = _unsuccessful(response, task)
            if unsuccessful is not None and unsuccessful.outcome == Outcome.RETRY:
                return unsuccessful
            if unsuccessful is not None:  # no robots.txt: everything is allowed (RFC 9309)
                return Result(task.id, task.url, Outcome.OK, http_status=response.status_code, robots="")
            body = response.raw.read(policy.robots_max_bytes, decode_content=True)
            transfer.check_not_cut()
            return Result(
                task.id,
                task.url,
                Outcome.OK,
                http_status=response.status_code,
                robots=body.decode("utf-8", errors="replace"),
            )
    except (requests.TooManyRedirects, BadTarget):
        return Result(task.id, task.url, Outcome.OK, robots="")
    except TransferAborted as error:
        return Result(task.id, task.url, Outcome.RETRY, error=str(error))
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        return Result(task.id, task.url, Outcome.RETRY, error=_describe(error))


def _check_declared_length(response: requests.Response, policy: Policy) -> None:
    declared = _content_length(response)
    if policy.max_bytes and declared is not None and declared > policy.max_bytes:
        raise BodyTooLarge(_too_large(policy))


def _stream_body(
    response: requests.Response,
    policy: Policy,
    transfer: Transfer,
    file: FileWriter | None,
    extractor: LinkExtractor | None,
    head: list[bytes] | None = None,
) -> tuple[int, str]:
    """Copy the decoded body to ``file`` and ``extractor``; return its size and SHA-256.

    read1 returns what one receive brought, where read waits for a whole
    chunk: a trickling server then still comes back here, to the limits.
    """
    raw = response.raw
    digest = hashlib.sha256()
    size = 0
    while chunk := raw.read1(policy.chunk_bytes, decode_content=True):
        transfer.received(len(chunk))
        size += len(chunk)
        if policy.max_bytes and size > policy.max_bytes:
            raise BodyTooLarge(_too_large(policy))
        digest.update(chunk)
        if file is not None:
            file.write(chunk)
        if head is not None and size - len(chunk) < HEAD_BYTES:
            head.append(chunk)  # the chunks themselves, uncopied: enough for an image header, read after
        if extractor is not None:
            extractor.feed(chunk)
    transfer.check_not_cut()
    declared = _content_length(response)
    # urllib3 enforces Content-Length too; this catches what slips past it.
    if declared is not None and raw.tell() < declared:
        raise TruncatedBody(f"truncated body: {raw.tell()} of {declared} bytes")
    return size, digest.hexdigest()


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _too_large(policy: Policy) -> str:
    return f"body larger than --max-bytes {policy.max_bytes} bytes"


def _status_text(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def _innermost(error: BaseException) -> BaseException:
    """Follow a network error's causes down to the first one."""
    cause: BaseException = error
    seen = {id(cause)}
    while True:
        inner = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return cause
        seen.add(id(inner))
        cause = inner


def _describe(error: BaseException) -> str:
    """Return a one-line message naming the innermost cause of an error."""
    cause = _innermost(error)
    return f"{type(cause).__name__}: {first_line(cause)}"[:300]
