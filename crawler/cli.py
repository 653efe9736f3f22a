"""The command line: ``crawler run|master|worker``.

The one place that sees argv and the environment: it builds the policy and
the configs, wires the master, the workers and logging together, and maps
errors to exit statuses: 0 every URL ok, 1 some URL failed, 2 the crawl could
not run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import secrets
import signal
import stat
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .broker.redis_conn import BROKER_ENV, BrokerSpec, mask_url, parse_broker_url, parse_crawl_name
from .broker.transport import format_address, parse_address
from .errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, EXIT_OK, CrawlerError, UsageError
from .messages import RESIZE_MODES, Policy, Status
from .rules import Scope, parse_patterns
from .shaping import HostCredentials, load_cookies, load_netrc, parse_header, read_header_file
from .tables import INPUT_FORMATS, InputSpec, input_format, open_input

if TYPE_CHECKING:
    from .broker import Connector
    from .local import LocalWorkers
    from .master import Master

# The master's and the worker's modules are imported by the commands that use them:
# a worker process need not load the master's, and the master need not load requests.
# That is about a tenth of a second off the start of every process.

__all__ = ["main", "parse_size"]

logger = logging.getLogger("crawler")

AUTHKEY_ENV = "CRAWLER_AUTHKEY"
MIN_FREE_ENV = "CRAWLER_MIN_FREE"
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
STATUS_WATCH_SECONDS = 2.0
CRAWL_PER_HOST = 4
"""Default downloads in flight per host when following links: polite to sites we were not asked about."""
STRAY_SHARD_SECONDS = 60.0
"""``crawler manifest`` spares unaccepted shards younger than this: a running crawl may accept them yet."""
LOCAL_CONNECT_SECONDS = 10.0
"""How long a local worker of ``run`` keeps trying to reach its master (it is on this machine)."""
DEFAULTS = Policy()
"""The policy's defaults, which the options show and start from: written once, in Policy."""


def parse_size(text: str) -> int:
    """Parse a byte count such as ``500K``, ``10M`` or ``1G`` (powers of 1024)."""
    match = SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 500K, 10M, 1G)")
    number, unit = match.groups()
    multiplier = 1024 ** ("kmgt".index(unit.lower()) + 1) if unit else 1
    return int(float(number) * multiplier)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CANNOT_RUN, f"crawler: error: {message} (see crawler --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError
    return value


def _domains(text: str) -> tuple[str, ...]:
    # In the IDNA form URLs are normalised to, so bücher.example matches its links.
    domains = (domain.strip().strip(".") for domain in text.split(",") if domain.strip().strip("."))
    try:
        return tuple(domain.encode("idna").decode("ascii").lower() for domain in domains)
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"not a list of domain names: {text!r}") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _headers(text: str) -> list[tuple[str, str]]:
    try:
        return read_header_file(Path(text[1:])) if text.startswith("@") else [parse_header(text)]
    except (ValueError, UsageError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


for _converter, _name in (
    (_positive_int, "a positive whole number"),
    (_non_negative_int, "a whole number"),
    (_positive_float, "a positive number"),
    (_non_negative_float, "a number"),
    (_quality, "a quality from 1 to 100"),
):
    _converter.__name__ = _name  # argparse names the type in its "invalid ... value" message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crawler", description="Distributed web and image downloader.")
    parser.add_argument("--version", action="version", version=f"crawler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,master,worker,manifest,status}")
    run = commands.add_parser("run", help="crawl on this machine: a master and local workers")
    master = commands.add_parser("master", help="serve a crawl to workers on any machine")
    worker = commands.add_parser("worker", help="work for a master")
    rebuild = commands.add_parser("manifest", help="rewrite DIR/manifest.jsonl from the crawl state")
    rebuild.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="jsonl: DIR/manifest.jsonl; parquet: DIR/manifest.parquet, typed columns (needs pyarrow)",
    )
    status = commands.add_parser("status", help="show how a crawl is doing, while it runs or after")
    status.add_argument("--json", action="store_true", help="one JSON object (keys in the README)")
    status.add_argument("--watch", action="store_true", help="redraw every 2 s until the crawl ends")
    for sub in (run, master, worker, rebuild, status):
        sub.add_argument("-o", "--output", type=Path, default=Path("output"), help="output folder (default: output)")
        sub.add_argument("-q", "--quiet", action="store_true", help="print errors only")
        sub.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv for debug)")
    for sub in (run, master):
        sub.add_argument(
            "seeds",
            nargs="?",
            default="seeds.txt",
            help="one URL per line, or a table (see --input-format); - for stdin (default: seeds.txt)",
        )
        sub.add_argument(
            "--timeout",
            type=_positive_float,
            default=DEFAULTS.timeout,
            help="seconds for connecting and for each read (default: %(default)g)",
        )
        sub.add_argument(
            "--max-time",
            type=_non_negative_float,
            default=DEFAULTS.max_time,
            help="seconds one attempt may take in all, like curl's --max-time (default: %(default)g; 0: no limit)",
        )
        sub.add_argument(
            "--min-speed",
            type=_size,
            default=DEFAULTS.min_speed,
            help="fail an attempt slower than this many bytes/s over --min-speed-time, e.g. 1K (default: off)",
        )
        sub.add_argument(
            "--min-speed-time",
            type=_positive_float,
            default=DEFAULTS.min_speed_time,
            help="seconds over which --min-speed is measured (default: %(default)g)",
        )
        sub.add_argument(
            "--retries",
            type=_non_negative_int,
            default=DEFAULTS.retries,
            help="further attempts after transient errors (default: %(default)s)",
        )
        sub.add_argument(
            "--max-bytes",
            type=_size,
            default=DEFAULTS.max_bytes,
            help="largest file kept, e.g. 500K, 10M, 1G (default: no limit)",
        )
        sub.add_argument(
            "--retry-wait",
            type=_positive_float,
            default=DEFAULTS.backoff_base,
            help="seconds before the first retry, doubled for each further one (default: %(default)g)",
        )
        sub.add_argument(
            "--user-agent", default=DEFAULTS.user_agent, help=f"User-Agent header (default: {DEFAULTS.agent})"
        )
        sub.add_argument(
            "--lease-seconds",
            type=_positive_float,
            default=DEFAULTS.lease_seconds,
            help="seconds a worker may hold a URL without a heartbeat (default: %(default)g)",
        )
    for sub in (run, master):
        add_dataset_options(sub)
        add_crawl_options(sub)
        add_request_options(sub)
        add_image_options(sub)
    run.add_argument(
        "-t",
        "--threads",
        type=_positive_int,
        default=16 * (os.cpu_count() or 1),
        help="downloads at once on this machine, all local workers together (default: 16 per CPU, %(default)s here)",
    )
    worker.add_argument(
        "-t",
        "--threads",
        type=_positive_int,
        default=16,
        help="downloads at once (default: 16); past 32, split over several processes",
    )
    for sub in (master, worker):
        sub.add_argument(
            "--authkey-file", type=Path, help=f"file holding the shared key, mode 0600 (default: ${AUTHKEY_ENV})"
        )
    for sub in (run, master, worker):
        add_broker_options(sub)
    run.add_argument(
        "-w",
        "--workers",
        type=_positive_int,
        help="worker processes, sharing -t between them (default: one per CPU, more past 32 downloads each)",
    )
    master.add_argument(
        "--bind",
        type=_address,
        default=("127.0.0.1", 5000),
        help="HOST:PORT to listen on (default: 127.0.0.1:5000)",
    )
    worker.add_argument(
        "--connect",
        type=_address,
        default=("127.0.0.1", 5000),
        help="the master's HOST:PORT (default: 127.0.0.1:5000)",
    )
    return parser


def add_broker_options(sub: argparse.ArgumentParser) -> None:
    """Options of the broker: the embedded manager (default) or a Redis every machine reaches."""
    group = sub.add_argument_group("broker")
    group.add_argument(
        "--broker",
        metavar="URL",
        help=f"redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix:///PATH (default: ${BROKER_ENV}; "
        "unset: the embedded manager)",
    )
    group.add_argument(
        "--crawl",
        type=_crawl_name,
        default="default",
        help="the crawl's name in the broker; crawls with different names share one Redis (default: default)",
    )
    group.add_argument("--broker-ca", type=Path, metavar="FILE", help="CA certificate for a rediss:// broker")
    group.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=60.0,
        help="seconds to keep trying to reach the master or the broker (default: 60)",
    )


def _crawl_name(text: str) -> str:
    try:
        return parse_crawl_name(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def broker_spec(args: argparse.Namespace) -> BrokerSpec | None:
    """The Redis broker the command should use, from --broker or $CRAWLER_BROKER; None: the manager."""
    url = args.broker or os.environ.get(BROKER_ENV, "").strip()
    if not url:
        return None
    if args.broker and mask_url(args.broker) != args.broker:
        logger.warning("a password in --broker is visible to every user of this machine (ps); set %s", BROKER_ENV)
    if args.broker_ca is not None and not args.broker_ca.is_file():
        raise UsageError(f"cannot read --broker-ca {args.broker_ca}")
    return BrokerSpec(parse_broker_url(url), args.crawl, args.broker_ca, args.connect_timeout)


def add_dataset_options(sub: argparse.ArgumentParser) -> None:
    """Options of datasets: URL tables in (crawler.tables), WebDataset shards out (crawler.shards)."""
    group = sub.add_argument_group("datasets")
    group.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="how to read SEEDS (default: by its extension, .csv .tsv .jsonl .parquet, .gz too; else txt)",
    )
    group.add_argument("--url-col", default="url", help="the URL column of a table (default: url)")
    group.add_argument(
        "--save-cols",
        type=_column_names,
        default=(),
        metavar="NAMES",
        help="columns of a table to keep beside each file, comma-separated (e.g. caption,license)",
    )
    group.add_argument(
        "--output-format",
        choices=("files", "webdataset"),
        default=DEFAULTS.output_format,
        help="one file per URL, or WebDataset tar shards under DIR/shards/ (default: %(default)s)",
    )
    group.add_argument(
        "--shard-size",
        type=_positive_int,
        default=DEFAULTS.shard_size,
        help="samples per shard (default: %(default)s)",
    )
    group.add_argument(
        "--shard-seconds",
        type=_positive_float,
        default=DEFAULTS.shard_seconds,
        help="close a shard this long after its first sample, however full (default: %(default)g)",
    )


def _column_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected column names, comma-separated")
    return names


def add_image_options(sub: argparse.ArgumentParser) -> None:
    """Options of images: resize and re-encode on the workers (img2dataset's names), opt-outs."""
    group = sub.add_argument_group("images")
    group.add_argument(
        "--resize",
        type=_positive_int,
        default=DEFAULTS.resize,
        metavar="SIZE",
        help="decode, resize and re-encode every kept file as an image of this size",
    )
    group.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default=DEFAULTS.resize_mode,
        help="which side becomes SIZE, as in img2dataset (default: %(default)s)",
    )
    group.add_argument("--resize-only-down", action="store_true", help="never enlarge")
    group.add_argument(
        "--image-format",
        choices=("jpg", "png", "webp"),
        default=DEFAULTS.image_format,
        help="format of re-encoded images (default: %(default)s)",
    )
    group.add_argument(
        "--quality", type=_quality, default=DEFAULTS.quality, help="JPEG/WebP quality, 1-100 (default: %(default)s)"
    )
    group.add_argument(
        "--min-image-size",
        type=_non_negative_int,
        default=DEFAULTS.min_image_size,
        help="fail images whose smaller side is below this (default: no floor)",
    )
    group.add_argument(
        "--max-aspect-ratio",
        type=_non_negative_float,
        default=DEFAULTS.max_aspect_ratio,
        help="fail images more elongated than this (default: no limit)",
    )
    group.add_argument(
        "--max-image-pixels",
        type=_non_negative_int,
        default=DEFAULTS.max_image_pixels,
        help="fail larger images before decoding them (default: %(default)s)",
    )
    group.add_argument(
        "--ignore-x-robots", action="store_true", help="keep files whose X-Robots-Tag says noai or noimageai"
    )
    group.add_argument("--x-robots-strict", action="store_true",
                       help="also honour X-Robots-Tag noindex and noimageindex")  # fmt: skip


def add_request_options(sub: argparse.ArgumentParser) -> None:
    """Options that shape every request (headers, cookies, credentials) and the disk floor."""
    group = sub.add_argument_group("requests")
    group.add_argument(
        "--header",
        dest="headers",
        action="extend",
        type=_headers,
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header with every request (repeatable); @FILE reads one per line, out of argv",
    )
    group.add_argument("--cookies", type=Path, help="a Netscape cookies.txt to send where its domains match")
    group.add_argument("--netrc", action="store_true", help="Basic auth per host from ~/.netrc (machine entries)")
    group.add_argument("--netrc-file", type=Path, help="Basic auth per host from this netrc file")
    group.add_argument(
        "--metrics",
        type=_address,
        metavar="HOST:PORT",
        help="serve /metrics (Prometheus), /status.json and a status page here; HOST defaults to 127.0.0.1",
    )
    group.add_argument(
        "--min-free",
        type=_size,
        default=os.environ.get(MIN_FREE_ENV, "1G"),
        help=f"free space to keep in the output folder, e.g. 500M (default: 1G or ${MIN_FREE_ENV}; 0: none)",
    )


def add_crawl_options(sub: argparse.ArgumentParser) -> None:
    """Options of crawl mode: following links, scope, filters, politeness."""
    group = sub.add_argument_group("crawl mode (follow links)")
    group.add_argument(
        "--depth",
        type=_non_negative_int,
        default=DEFAULTS.depth,
        help="levels of links to follow from the seeds (default: 0, the seeds only)",
    )
    group.add_argument(
        "--accept",
        type=parse_patterns,
        default=(),
        help="keep only files of these content types or extensions, e.g. 'image/*' or .jpg,.png",
    )
    group.add_argument("--reject", type=parse_patterns, default=(), help="never keep files of these")
    group.add_argument("--span-hosts", action="store_true", help="follow links to any host (default: the seeds' hosts)")
    group.add_argument(
        "--domains",
        type=_domains,
        default=(),
        help="follow links only to these domains and their subdomains",
    )
    group.add_argument(
        "--max-urls",
        type=_non_negative_int,
        default=0,
        help="stop adding links once the crawl knows this many URLs (default: no cap)",
    )
    group.add_argument("--ignore-robots", action="store_true", help="do not read or obey robots.txt in crawl mode")
    group.add_argument(
        "--per-host",
        type=_non_negative_int,
        default=None,
        help="downloads in flight per host, all workers together (default: 4 in crawl mode, "
        "no cap with --depth 0; 0: no cap)",
    )
    group.add_argument(
        "--delay",
        type=_non_negative_float,
        default=0.0,
        help="seconds between two requests to one host (default: 0; robots.txt Crawl-delay also applies)",
    )


def read_authkey(path: Path | None) -> bytes:
    """Return the shared key from ``path`` (mode 0600) or the environment."""
    if path is not None:
        try:
            mode = path.stat().st_mode
            key = path.read_bytes().strip()
        except OSError as error:
            raise UsageError(f"cannot read authkey file {path}: {error.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"authkey file {path} is readable by others; run: chmod 600 {path}")
    else:
        key = os.environ.get(AUTHKEY_ENV, "").strip().encode()
    if not key:
        raise UsageError(f"no authkey: set {AUTHKEY_ENV} or pass --authkey-file FILE")
    return key


def build_policy(args: argparse.Namespace) -> Policy:
    return Policy(
        headers=tuple(args.headers),
        cookies=load_cookies(args.cookies) if args.cookies else (),
        min_free=args.min_free,
        output_format=args.output_format,
        shard_size=args.shard_size,
        shard_seconds=args.shard_seconds,
        resize=args.resize,
        resize_mode=args.resize_mode,
        resize_only_down=args.resize_only_down,
        image_format=args.image_format,
        quality=args.quality,
        min_image_size=args.min_image_size,
        max_aspect_ratio=args.max_aspect_ratio,
        max_image_pixels=args.max_image_pixels,
        honor_x_robots=not args.ignore_x_robots,
        x_robots_strict=args.x_robots_strict,
        timeout=args.timeout,
        max_time=args.max_time,
        min_speed=args.min_speed,
        min_speed_time=args.min_speed_time,
        retries=args.retries,
        max_bytes=args.max_bytes,
        user_agent=args.user_agent,
        lease_seconds=args.lease_seconds,
        backoff_base=args.retry_wait,
        depth=args.depth,
        accept=args.accept,
        reject=args.reject,
    )


def open_master(args: argparse.Namespace, bind: tuple[str, int], authkey: bytes | None, stack: ExitStack) -> Master:
    """Build the master and its collaborators; ``stack`` closes each one, however far this got.

    With a Redis broker (``--broker``) the authkey and ``bind`` are unused.
    """
    from .backlog import Backlog
    from .broker import Broker
    from .master import Master, MasterConfig
    from .output import CrawlOutput
    from .robots import RobotsGate

    policy = build_policy(args)
    crawling = args.depth > 0
    per_host = args.per_host if args.per_host is not None else (CRAWL_PER_HOST if crawling else 0)
    input_spec = InputSpec(input_format(args.seeds, args.input_format), args.url_col, args.save_cols)
    seeds = stack.enter_context(open_input(args.seeds, input_spec))
    output = CrawlOutput.open(args.output, policy.depth, policy.lease_seconds)
    stack.callback(output.close)
    spec: BrokerSpec | None = args.spec
    broker: Broker
    if spec is not None:
        from .broker.redis_broker import RedisBroker

        state = output.state
        broker = RedisBroker(spec, policy, state.path.parent, state.final_ids, per_host=per_host, host_delay=args.delay)
    else:
        from .broker.manager import ManagerBroker

        assert authkey is not None
        broker = ManagerBroker(bind, authkey, policy, per_host=per_host, host_delay=args.delay)
    stack.callback(broker.shutdown)
    scope = Scope(span_hosts=args.span_hosts, domains=args.domains)
    config = MasterConfig(policy=policy, show_progress=not args.quiet, max_urls=args.max_urls)
    robots = RobotsGate(policy.agent) if crawling and not args.ignore_robots else None
    backlog = Backlog(output.state, seeds, scope, _credentials(args))
    master = Master(config, output, broker, backlog, scope, robots)
    if args.metrics is not None:
        from .web import MetricsServer

        server = MetricsServer(args.metrics, master.monitor)
        stack.callback(server.close)
        logger.info("master: metrics and status page on http://%s/", server.address)
    return master


def _credentials(args: argparse.Namespace) -> HostCredentials:
    if args.netrc_file is not None:
        return HostCredentials(load_netrc(args.netrc_file))
    if args.netrc:
        return HostCredentials(load_netrc(Path.home() / ".netrc"))
    return HostCredentials()


def _print_summary(args: argparse.Namespace, master: Master) -> None:
    if not args.quiet:
        print(f"crawler: {master.counts.summary()}", file=sys.stderr)


def command_master(args: argparse.Namespace) -> int:
    authkey = None if args.spec else read_authkey(args.authkey_file)
    with ExitStack() as stack:
        master = open_master(args, args.bind, authkey, stack)
        logger.info("master: serving on %s", master.broker.address)
        status = master.run()
    _print_summary(args, master)
    return status


def command_worker(args: argparse.Namespace) -> int:
    """One worker process, or past 32 downloads several (see crawler.local), until the crawl is over."""
    from .local import split_downloads

    spec: BrokerSpec | None = args.spec
    authkey = read_authkey(args.authkey_file) if spec is None else b""
    threads = split_downloads(args.threads)
    if len(threads) > 1:
        return _run_worker_processes(args, threads, authkey)
    from .worker import Worker, WorkerConfig

    connector: Connector
    if spec is not None:
        from .broker.redis_broker import RedisConnector

        connector = RedisConnector(spec)
    else:
        from .broker.manager import ManagerConnector

        connector = ManagerConnector(args.connect, authkey)
    config = WorkerConfig(output=args.output, threads=args.threads, connect_seconds=args.connect_timeout)
    return Worker(config, connector).run()


def _run_worker_processes(args: argparse.Namespace, threads: list[int], authkey: bytes) -> int:
    """Fork the worker processes and wait for them; each reports its own errors."""
    from .local import LocalWorkers, WorkerSetup

    setup = WorkerSetup(args.output, authkey, args.spec, args.connect_timeout, _no_logging_setup)
    workers = LocalWorkers(threads, setup)
    # Killing this process must stop its workers too, as it stops a worker of one process.
    signal.signal(signal.SIGTERM, functools.partial(_forward_signal, workers))
    try:
        workers.start(format_address(args.connect))
        return workers.wait()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # each worker got the Ctrl-C too, and hands its URLs back
    finally:
        workers.stop()


def _forward_signal(workers: LocalWorkers, signum: int, _frame: object) -> None:
    workers.send_signal(signum)


def _no_logging_setup() -> None:
    """Forked workers keep the logging main() set up."""


def command_manifest(args: argparse.Namespace) -> int:
    """Rewrite the manifest from the state: one line per URL that reached a final state."""
    from .shards import sweep_shards
    from .state import CrawlState, Manifest

    if not (args.output / ".crawler" / "state.db").is_file():
        raise UsageError(f"no crawl state in {args.output} (expected {args.output}/.crawler/state.db)")
    state = CrawlState(args.output)
    try:
        if args.format == "parquet":
            from .export import write_parquet

            path = write_parquet(args.output, state)
        else:
            path = Manifest.rebuild(args.output, state)
        counts = state.counts()
        # A folder gathered from workers' hosts may hold shards the master never accepted.
        removed = sweep_shards(args.output, state.accepted_shards(), older_than=STRAY_SHARD_SECONDS)
    finally:
        state.close()
    if removed and not args.quiet:
        print(f"crawler: removed {removed} shards the master did not accept", file=sys.stderr)
    if not args.quiet:
        print(
            f"crawler: wrote {path}: {counts.get(Status.OK, 0)} ok, {counts.get(Status.FAILED, 0)} failed, "
            f"{counts.get(Status.PENDING, 0)} not final",
            file=sys.stderr,
        )
    return EXIT_OK


def command_run(args: argparse.Namespace) -> int:
    """A master on a free loopback port, a random key, and ``--workers`` local workers.

    With ``--broker``, the master and the local workers meet in that Redis instead.
    """
    from .local import LocalWorkers, WorkerSetup, split_downloads

    authkey = secrets.token_hex(32).encode()
    setup = WorkerSetup(
        args.output, authkey, args.spec, LOCAL_CONNECT_SECONDS, functools.partial(_worker_logging, args.verbose)
    )
    # Forked first, while this process has no thread, socket or database: see crawler.local.
    workers = LocalWorkers(split_downloads(args.threads, args.workers, at_least=os.cpu_count() or 1), setup)
    try:
        with ExitStack() as stack:
            master = open_master(args, ("127.0.0.1", 0), authkey, stack)
            workers.start(master.broker.address)
            master.watch(workers.check)
            try:
                status = master.run()
            finally:
                # Still serving: a worker that connects only now hears that the crawl is over.
                workers.stop()
    finally:
        workers.stop()  # the master could not open the crawl: its workers exit without starting
    _print_summary(args, master)
    return status


def _worker_logging(verbose: int) -> None:
    """A local worker logs errors only, unless ``run`` was asked for more."""
    setup_logging(argparse.Namespace(quiet=not verbose, verbose=verbose))


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines that do not collide with a live progress bar."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return "\r\x1b[K" + text if self.stream.isatty() else text


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO, logging.DEBUG)[min(args.verbose, 1)]
    handler = _ConsoleHandler(sys.stderr)
    tty = sys.stderr.isatty()
    handler.setFormatter(logging.Formatter("crawler: %(message)s" if tty else "%(asctime)s crawler: %(message)s"))
    root = logging.getLogger("crawler")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # urllib3 warns, with a traceback, about headers cut short, which is what a
    # --max-time cut looks like to it; the URL's result already says what happened.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if args.verbose >= 2 else logging.ERROR)


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM (a service manager stopping us) like Ctrl-C: stop cleanly."""
    raise KeyboardInterrupt


def command_status(args: argparse.Namespace) -> int:
    """Print the crawl's latest status; with --watch, again every 2 s until it ends."""
    from .monitor import read_status, render_status

    while True:
        snapshot = read_status(args.output)
        if args.json:
            print(json.dumps(snapshot), flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")  # redraw in place on a terminal
            print(render_status(snapshot), flush=True)
        if not args.watch or not snapshot["running"]:
            return EXIT_OK
        time.sleep(STATUS_WATCH_SECONDS)


COMMANDS = {
    "run": command_run,
    "master": command_master,
    "worker": command_worker,
    "manifest": command_manifest,
    "status": command_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.spec = broker_spec(args) if "broker" in args else None
        return COMMANDS[args.command](args)
    except CrawlerError as error:
        print(f"crawler: error: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
