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

import requests
import urllib3

from .links import LinkExtractor
from .messages import Outcome, Policy, Result, Task
from .mime import is_html
from .rules import Keep
from .storage import FileWriter, OutputFolder, relative_path_for
from .transfer import LimitedAdapter, Transfer, TransferAborted, Watchdog

__all__ = ["fetch", "make_session", "parse_retry_after"]

logger = logging.getLogger(__name__)


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


def _cookie_jar(cookies: tuple[tuple[str, str, str, str, bool, int | None], ...]) -> requests.cookies.RequestsCookieJar:
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
    prepared = requests.Request(
        "GET",
        task.url,
        headers=session.headers,
        cookies=cookies,
        auth=task.auth,
        hooks={"response": transfer.saw_response},
    )
    try:
        return session.send(prepared.prepare(), stream=True, timeout=policy.timeout, allow_redirects=True)
    except ValueError as error:
        # requests' InvalidURL and InvalidSchema are ValueErrors, and a Location
        # such as "http://[::1" raises a bare one from urllib.parse.
        where = "redirect target" if transfer.responses else "URL"
        raise BadTarget(f"bad {where}: {_first_line(error)}") from None


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
    extractor = LinkExtractor(content_type) if task.depth < policy.depth and is_html(content_type) else None
    kept = Keep(policy.accept, policy.reject).keeps(task.url, content_type)
    if not kept and extractor is None:
        return Result(task.id, task.url, Outcome.OK, content_type=content_type, http_status=status, kept=False)
    _check_declared_length(response, policy)
    relative = relative_path_for(task.url, content_type)
    if kept:
        with output.writer(relative) as file:
            size, digest = _stream_body(response, policy, transfer, file, extractor)
    else:
        size, digest = _stream_body(response, policy, transfer, None, extractor)
    links, base = extractor.close() if extractor else ([], None)
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
    return f"{type(cause).__name__}: {_first_line(cause)}"[:300]


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0][:300] if text.strip() else type(error).__name__
