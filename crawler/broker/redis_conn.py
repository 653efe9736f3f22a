"""Reaching a Redis broker: its URL (masked wherever it is shown), the client, one-line errors.

The URL may hold a password, so it is never logged as given: :func:`mask_url`
replaces the password, and every message here uses the masked form. Every
failure of Redis becomes one of the crawl's own errors (see
:mod:`crawler.errors`), which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import (
    AuthenticationFailed,
    BrokerRefused,
    ConnectionLost,
    MasterError,
    MasterUnreachable,
    UsageError,
    first_line,
)

if TYPE_CHECKING:
    import redis

__all__ = ["BROKER_ENV", "BrokerSpec", "broker_errors", "check_server", "mask_url", "open_client", "parse_crawl_name"]

BROKER_ENV = "CRAWLER_BROKER"
SCHEMES = ("redis", "rediss", "unix")
CRAWL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_VERSION = (6, 2)
"""LPOP with a count, LMOVE, and Lua that may write after TIME: 6.2 has them all."""
SOCKET_SECONDS = 10.0
"""Longest wait for one reply; the longest blocking call crawler makes is far shorter."""


@dataclasses.dataclass(frozen=True)
class BrokerSpec:
    """Where a crawl's Redis is and what the crawl is called in it."""

    url: str
    crawl: str = "default"
    ca_file: Path | None = None
    """For rediss://: the certificate authority that signed the server's certificate."""
    connect_timeout: float = 60.0
    """How long to keep trying to reach the broker, at start and after losing it."""

    @property
    def shown(self) -> str:
        """The URL without its password, and the crawl: what messages say."""
        return f"{mask_url(self.url)} (crawl {self.crawl})"

    @property
    def prefix(self) -> str:
        """Every key of the crawl starts with this; the braces keep them in one hash slot."""
        return f"crawler:{{{self.crawl}}}:"


def parse_broker_url(text: str) -> str:
    """Check that ``text`` is a broker URL; raise UsageError (without the password) if not."""
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        raise UsageError(f"not a broker URL: {mask_url(text)}") from None
    if parts.scheme not in SCHEMES:
        raise UsageError(f"not a broker URL: {mask_url(text)} (expected redis://, rediss:// or unix://)")
    if parts.scheme == "unix" and not parts.path:
        raise UsageError(f"not a broker URL: {mask_url(text)} (expected unix:///path/to/redis.sock)")
    if parts.scheme != "unix" and not parts.hostname:
        raise UsageError(f"not a broker URL: {mask_url(text)} (no host)")
    return text.strip()


def parse_crawl_name(text: str) -> str:
    if not CRAWL_NAME.match(text):
        raise UsageError(f"not a crawl name: {text!r} (letters, digits, '.', '_' and '-', at most 64)")
    return text


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, in the user part and in the query."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            # redis://PASSWORD@host is a password alone, as redis-py reads it.
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        query = parse_qsl(parts.query, keep_blank_values=True)
        if netloc == parts.netloc and not any(key.lower() == "password" for key, _value in query):
            return url
        masked_query = urlencode(
            [(key, "***" if key.lower() == "password" else value) for key, value in query], safe="*"
        )
        # "//" kept even without a host: unix:///path must not become unix:/path.
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{masked_query}" if masked_query else "")
    except ValueError:
        return "(a broker URL that cannot be parsed)"


def open_client(spec: BrokerSpec) -> redis.Redis:
    """A client for the broker, not yet connected (redis-py connects on the first command)."""
    try:
        import redis
    except ImportError:
        hint = "pip install redis, or from crawler's folder: pip install '.[redis]'"
        raise UsageError(f"the Redis broker needs redis-py: {hint}") from None
    options: dict[str, object] = {
        "socket_connect_timeout": min(5.0, spec.connect_timeout),
        "socket_timeout": SOCKET_SECONDS,
        # Retrying is crawler's decision (a worker reconnects, the master waits for its broker),
        # made where it knows whether a command may run twice.
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    }
    if not spec.url.startswith("unix:"):
        options["socket_keepalive"] = True  # a broker's host that vanishes is noticed, not waited on
    if spec.ca_file is not None:
        options["ssl_ca_certs"] = str(spec.ca_file)
    try:
        return redis.Redis.from_url(spec.url, **options)
    except ValueError as error:
        raise UsageError(f"not a broker URL: {mask_url(spec.url)} ({error})") from None


def check_server(client: redis.Redis, spec: BrokerSpec) -> None:
    """Refuse a server older than Redis 6.2, with one line."""
    with broker_errors(spec, connecting=True):
        try:
            info = client.info("server")
        except TypeError as error:  # redis-py passes unknown URL parameters on to the connection
            raise UsageError(f"not a broker URL: {mask_url(spec.url)} ({error})") from None
        except (AttributeError, ValueError, IndexError, KeyError) as error:
            # redis-py trusts the handshake's reply; a server that only looks like Redis breaks it.
            raise MasterError(f"the broker at {spec.shown} does not answer like Redis ({error})") from None
    version = str(info.get("redis_version", "0"))
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers < MIN_VERSION:
        raise MasterError(f"the broker at {spec.shown} runs Redis {version}; crawler needs Redis 6.2 or newer")


@contextlib.contextmanager
def broker_errors(spec: BrokerSpec, connecting: bool = False) -> Iterator[None]:
    """Turn redis-py's exceptions into the crawl's: one line each, the password masked.

    ``connecting``: an unreachable broker is MasterUnreachable (try again
    until the connect timeout); afterwards it is ConnectionLost.
    """
    import redis

    try:
        yield
    except redis.AuthenticationError as error:  # a ConnectionError subclass: first
        raise AuthenticationFailed(f"the broker at {spec.shown} refused the login: {first_line(error, 200)}") from None
    except redis.exceptions.NoPermissionError as error:
        raise BrokerRefused(
            f"the broker at {spec.shown} does not let this user run a command crawler needs: {first_line(error, 200)}"
        ) from None
    except redis.exceptions.InvalidResponse as error:
        raise MasterError(f"the broker at {spec.shown} does not answer like Redis: {first_line(error, 200)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        if _is_tls_failure(error):  # no retry mends a certificate
            hint = "" if spec.ca_file else "; if a private CA signed it, pass --broker-ca FILE"
            raise MasterError(f"TLS with the broker at {spec.shown} failed: {first_line(error, 200)}{hint}") from None
        kind = MasterUnreachable if connecting else ConnectionLost
        raise kind(f"no broker answered at {spec.shown}: {first_line(error, 200)}") from None
    except redis.RedisError as error:
        raise MasterError(f"the broker at {spec.shown} failed: {first_line(error, 200)}") from None


def _is_tls_failure(error: BaseException) -> bool:
    import ssl  # only when a connection failed: redis-py has loaded it then

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
