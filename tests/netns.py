"""Real (virtual) hosts for multi-host tests: network namespaces on a bridge, and faults on their links.

A :class:`Network` is a hub namespace holding a bridge, and hosts, each a
namespace with one veth link to the bridge and one address on
``10.231.0.0/24``: processes started with :meth:`Host.start` see only that
network and their own loopback. Nothing is added to the machine's own
namespace, so the test run's network never meets the machine's.

Faults, each one line:

- :meth:`Host.loss`: drop a share of the host's packets at random (an
  nftables ``numgen`` rule; the kernel here has no ``netem``);
- :meth:`Host.slow`: a token-bucket rate on its link (``tc tbf``);
- :meth:`Host.down` / :meth:`Host.up`: a partition, silent: the bridge's end
  of its link goes down, so its packets vanish without an error;
- :meth:`Host.blackhole` / :meth:`Host.heal`: a machine that vanished:
  every packet in or out is dropped, no reset, no ICMP;
- :meth:`Network.relay`: delay (and jitter), by a relay of the tests' own
  (``tests/relay.py``) in a middle host that holds each chunk L ms.

Everything is torn down by :meth:`Network.close`, also after a failed test:
the processes started in the namespaces, then the namespaces (which takes
their links with them). Namespaces a killed test run left behind are
removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Host", "NetnsUnavailable", "Network", "remove_leftovers"]

SUBNET = "10.231.0"
PREFIX = "crw"
ROOT = Path(__file__).resolve().parent.parent


class NetnsUnavailable(Exception):
    """This process may not make network namespaces (no CAP_NET_ADMIN, or no iproute2)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _in(namespace: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(command)} in {namespace}: {done.stderr.strip()}")
    return done


def remove_leftovers() -> None:
    """Delete the namespaces of earlier test runs whose process is gone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({PREFIX}(\d+)-\S+)", listed, re.MULTILINE):
        namespace, pid = name
        if not Path(f"/proc/{pid}").exists():
            _kill_all_in(namespace)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _kill_all_in(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Host:
    """One namespace on the bridge: an address, a link, and the faults that link can suffer."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{network.tag}-{name}"
        self.address = f"{SUBNET}.{index}"
        self.link = f"eth{index}"  # inside the host's namespace
        self.hub_link = f"hub{index}"  # its other end, on the bridge
        _ip("netns", "add", self.namespace)
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("-n", network.hub, "link", "add", self.hub_link, "type", "veth", "peer", "name", self.link,
            "netns", self.namespace)  # fmt: skip
        _ip("-n", network.hub, "link", "set", self.hub_link, "master", "br0", "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", self.link)
        _ip("-n", self.namespace, "link", "set", self.link, "up")

    def start(self, command: Sequence[str], log: Path | None = None, **options: object) -> subprocess.Popen[str]:
        """Start ``command`` in this host (stdout and stderr to ``log`` when given); stopped by close()."""
        output = open(log, "w") if log is not None else subprocess.DEVNULL
        process: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            **options,  # type: ignore[call-overload]
        )
        if log is not None:
            output.close()  # type: ignore[union-attr]
        self.network.processes.append(process)
        return process

    def python(self, *args: str, log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``python ARGS`` in this host, with the project importable."""
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "CRAWLER_MIN_FREE": "0", **(env or {})}
        return self.start([sys.executable, *args], log=log, env=environment)

    # --- faults ---------------------------------------------------------------

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets this host receives and as many of those it sends."""
        self._rules("loss", f"numgen random mod 100 < {percent} drop")

    def blackhole(self) -> None:
        """Drop every packet in and out, silently: to the others this host has vanished."""
        self._rules("blackhole", "iifname != lo drop", "oifname != lo drop")

    def heal(self) -> None:
        """Remove loss and blackhole rules."""
        for table in ("loss", "blackhole"):
            _in(self.namespace, "nft", "delete", "table", "inet", table, check=False)

    def slow(self, rate: str) -> None:
        """Cap what this host sends to ``rate`` (tc syntax: 512kbit, 2mbit)."""
        _in(self.namespace, "tc", "qdisc", "replace", "dev", self.link, "root", "tbf", "rate", rate,
            "burst", "32kbit", "latency", "2s")  # fmt: skip

    def down(self) -> None:
        """Partition this host: the bridge's end of its link goes down; its packets vanish without error."""
        _ip("-n", self.network.hub, "link", "set", self.hub_link, "down")

    def up(self) -> None:
        _ip("-n", self.network.hub, "link", "set", self.hub_link, "up")

    def _rules(self, table: str, *rules: str) -> None:
        # One table per kind of fault, with an input and an output chain, so heal() removes it whole.
        _in(self.namespace, "nft", "add", "table", "inet", table)
        for chain, hook in (("input", "input"), ("output", "output")):
            _in(self.namespace, "nft", "add", "chain", "inet", table, chain,
                f"{{ type filter hook {hook} priority 0; policy accept; }}")  # fmt: skip
            for rule in rules:
                if ("iifname" in rule and hook == "output") or ("oifname" in rule and hook == "input"):
                    continue
                _in(self.namespace, "nft", "add", "rule", "inet", table, chain, *rule.split())


class Network:
    """A bridge in a hub namespace, and the hosts on it."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        try:
            _ip("netns", "add", self.hub)
        except (RuntimeError, FileNotFoundError) as error:
            raise NetnsUnavailable(str(error)) from None
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")

    def host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts) + 1)
        self.hosts.append(host)
        return host

    def relay(self, routes: dict[int, str], delay_ms: float, jitter_ms: float = 0.0, log: Path | None = None) -> Host:
        """A host that forwards PORT -> HOST:PORT for each route, holding every chunk ``delay_ms`` each way."""
        host = self.host("relay")
        args = ["-m", "tests.relay", "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms)]
        for port, target in routes.items():
            args += ["--route", f"{host.address}:{port}={target}"]
        host.python(*args, log=log)
        for port in routes:
            wait_for_port(host, port)
        return host

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for namespace in [host.namespace for host in self.hosts] + [self.hub]:
            _kill_all_in(namespace)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def wait_for_port(host: Host, port: int, limit: float = 20.0) -> None:
    """Wait until something listens on ``host``'s address at ``port`` (asked from inside the host)."""
    deadline = time.monotonic() + limit
    probe = f"import socket; socket.create_connection(('{host.address}', {port}), timeout=1).close()"
    while _in(host.namespace, sys.executable, "-c", probe, check=False).returncode:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host.address}:{port} in {host.name}")
        time.sleep(0.1)
