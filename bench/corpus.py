"""Make the benchmark's deterministic corpus of image-like files.

Sizes follow a log-normal law (median 25 KB, sigma 1.0, clipped to 2 KB..2 MB);
each file is a JPEG header and trailer around random bytes, so every body is
unique and incompressible. ``--large K`` adds K files of 50 MB for the large
file scenario. Everything lands under ``--dir`` (default /tmp/crawler-bench/corpus):

    www/img/<a-d>/img_00001.jpg   the small files
    www/large/big_000.jpg         the large files
    sums.tsv                      relative path, size, sha256 (one line each)
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
from pathlib import Path

MEDIAN = 25_000
SIGMA = 1.0
MIN_SIZE, MAX_SIZE = 2_000, 2_000_000
LARGE_BYTES = 50 * 1024 * 1024
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
JPEG_TAIL = bytes.fromhex("ffd9")


def image_like(size: int, rng: random.Random) -> bytes:
    """Return ``size`` bytes that start and end like a JPEG."""
    middle = size - len(JPEG_HEAD) - len(JPEG_TAIL)
    return JPEG_HEAD + rng.randbytes(middle) + JPEG_TAIL


def small_sizes(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(MAX_SIZE, max(MIN_SIZE, int(rng.lognormvariate(math.log(MEDIAN), SIGMA)))) for _ in range(count)]


def make_corpus(root: Path, count: int, large: int, seed: int = 1) -> list[tuple[str, int, str]]:
    """Write the corpus (skipped when sums.tsv already matches) and return its entries."""
    sums = root / "sums.tsv"
    stamp = f"# count={count} large={large} seed={seed}\n"
    if sums.exists() and sums.read_text().startswith(stamp):
        return read_sums(root)
    entries = []
    for index, size in enumerate(small_sizes(count, seed), start=1):
        relative = f"img/{'abcd'[index % 4]}/img_{index:05d}.jpg"
        entries.append(_write(root / "www", relative, image_like(size, random.Random(seed * 1_000_003 + index))))
    for index in range(large):
        body = image_like(LARGE_BYTES, random.Random(seed * 7_000_003 + index))
        entries.append(_write(root / "www", f"large/big_{index:03d}.jpg", body))
    sums.write_text(stamp + "".join(f"{rel}\t{size}\t{digest}\n" for rel, size, digest in entries))
    return entries


def _write(www: Path, relative: str, body: bytes) -> tuple[str, int, str]:
    path = www / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return relative, len(body), hashlib.sha256(body).hexdigest()


def read_sums(root: Path) -> list[tuple[str, int, str]]:
    entries = []
    for line in (root / "sums.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            relative, size, digest = line.split("\t")
            entries.append((relative, int(size), digest))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/crawler-bench/corpus"))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--large", type=int, default=20)
    args = parser.parse_args()
    entries = make_corpus(args.dir, args.count, args.large)
    print(f"{len(entries)} files, {sum(size for _rel, size, _digest in entries) / 1e6:.0f} MB under {args.dir}")
    os.sync()


if __name__ == "__main__":
    main()
