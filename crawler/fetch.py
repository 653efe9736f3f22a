"""Fetch one URL into one file: a single attempt, classified.

Knows nothing of queues or retries: it returns a :class:`Result` whose
outcome is ``ok``, ``failed`` (permanent: 4xx, too large, bad redirect) or
``retry`` (transient: 429, 5xx, network errors, timeouts, truncated bodies),
and the master decides what happens next.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.cookiejar
import os
import time
import urllib.request
from typing import IO

import requests
import urllib3

from . import __version__
from .links import LinkExtractor, is_html
from .messages import Outcome, Policy, Result, Task
from .rules import Keep
from .storage import OutputFolder, relative_path_for

__all__ = ["fetch", "make_session", "parse_retry_after"]


class BodyTooLarge(Exception):
    """The body grew past the policy's ``max_bytes``."""


class TruncatedBody(Exception):
    """The connection ended before Content-Length bytes arrived."""


def make_session(policy: Policy) -> requests.Session:
    """Return a session configured for ``policy``; use one per thread.

    Requests go out through :func:`_get` as prepared requests, so the
    environment is read here once, not merged into every request: proxy
    variables (``trust_env`` only when there are some), and a CA bundle
    named by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, as requests does.
    """
    session = requests.Session()
    session.trust_env = bool(urllib.request.getproxies())
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.max_redirects = policy.max_redirects
    session.headers["User-Agent"] = policy.user_agent or f"crawler/{__version__}"
    # No cookie outlives its URL: what a URL gets must not depend on which
    # thread fetched what before it. Cookies set along one URL's redirects
    # still travel with that URL's request (requests keeps them on it).
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _get(session: requests.Session, url: str, policy: Policy) -> requests.Response:
    """GET ``url`` as a prepared request.

    Session.get merges the session's settings into every call, which costs
    about 15% of a request's CPU and adds nothing make_session has not set.
    """
    prepared = requests.Request("GET", url, headers=session.headers).prepare()
    return session.send(prepared, stream=True, timeout=policy.timeout, allow_redirects=True)


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


def fetch(session: requests.Session, task: Task, policy: Policy, output: OutputFolder, worker: str) -> Result:
    """Download ``task.url`` into ``output`` once and say what came of it."""
    started = time.monotonic()
    result = _fetch_robots(session, task, policy) if task.robots else _attempt(session, task, policy, output)
    return result._replace(attempt=task.attempt, worker=worker, elapsed=time.monotonic() - started)


def _attempt(session: requests.Session, task: Task, policy: Policy, output: OutputFolder) -> Result:
    failed = Outcome.FAILED.value
    retry = Outcome.RETRY.value
    try:
        with _get(session, task.url, policy) as response:
            return _save(response, task, policy, output)
    except requests.TooManyRedirects:
        return Result(task.id, task.url, failed, error=f"more than {policy.max_redirects} redirects")
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as error:
        return Result(task.id, task.url, failed, error=f"bad redirect target: {error}")
    except requests.Timeout:
        return Result(task.id, task.url, retry, error=f"timed out after {policy.timeout:g} s")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        return Result(task.id, task.url, retry, error=_describe(error))
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
            Outcome.RETRY.value,
            http_status=status,
            error=_status_text(response),
            retry_after=retry_after,
        )
    if not 200 <= status < 300:
        return Result(
            task.id,
            task.url,
            Outcome.FAILED.value,
            http_status=status,
            error=_status_text(response),
            content_type=response.headers.get("Content-Type"),
        )
    return None


def _save(response: requests.Response, task: Task, policy: Policy, output: OutputFolder) -> Result:
    unsuccessful = _unsuccessful(response, task)
    if unsuccessful is not None:
        return unsuccessful
    content_type = response.headers.get("Content-Type")
    status = response.status_code
    extractor = LinkExtractor(content_type) if task.depth < policy.depth and is_html(content_type) else None
    kept = Keep(policy.accept, policy.reject).keeps(task.url, content_type)
    if not kept and extractor is None:
        return Result(task.id, task.url, Outcome.OK.value, content_type=content_type, http_status=status, kept=False)
    _check_declared_length(response, policy)
    relative = relative_path_for(task.url, content_type)
    if kept:
        with output.writer(relative) as file:
            size, digest = _stream_body(response, policy, file, extractor)
    else:
        size, digest = _stream_body(response, policy, None, extractor)
    links, base = extractor.close() if extractor else ([], None)
    return Result(
        task.id,
        task.url,
        Outcome.OK.value,
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


def _fetch_robots(session: requests.Session, task: Task, policy: Policy) -> Result:
    """Fetch a host's robots.txt for the master: its text, or "" when there is none (4xx)."""
    try:
        with _get(session, task.url, policy) as response:
            unsuccessful = _unsuccessful(response, task)
            if unsuccessful is not None and unsuccessful.outcome == Outcome.RETRY.value:
                return unsuccessful
            if unsuccessful is not None:  # no robots.txt: everything is allowed (RFC 9309)
                return Result(task.id, task.url, Outcome.OK.value, http_status=response.status_code, robots="")
            body = response.raw.read(policy.robots_max_bytes, decode_content=True)
            return Result(
                task.id,
                task.url,
                Outcome.OK.value,
                http_status=response.status_code,
                robots=body.decode("utf-8", errors="replace"),
            )
    except requests.TooManyRedirects:
        return Result(task.id, task.url, Outcome.OK.value, robots="")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        return Result(task.id, task.url, Outcome.RETRY.value, error=_describe(error))


def _check_declared_length(response: requests.Response, policy: Policy) -> None:
    declared = _content_length(response)
    if policy.max_bytes and declared is not None and declared > policy.max_bytes:
        raise BodyTooLarge(_too_large(policy))


def _stream_body(
    response: requests.Response, policy: Policy, file: IO[bytes] | None, extractor: LinkExtractor | None
) -> tuple[int, str]:
    """Copy the decoded body to ``file`` and ``extractor``; return its size and SHA-256."""
    raw = response.raw
    digest = hashlib.sha256()
    size = 0
    while chunk := raw.read(policy.chunk_bytes, decode_content=True):
        size += len(chunk)
        if policy.max_bytes and size > policy.max_bytes:
            raise BodyTooLarge(_too_large(policy))
        digest.update(chunk)
        if file is not None:
            file.write(chunk)
        if extractor is not None:
            extractor.feed(chunk)
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


def _describe(error: BaseException) -> str:
    """Return a one-line message naming the innermost cause of a network error."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:300]
