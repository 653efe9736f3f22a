#!/usr/bin/env python3
"""Resizing images on the way in: crawler --resize against img2dataset, same list, same settings.

    python bench/images_bench.py [--images 400] [--runs 3] [--c 8] [--output-format webdataset]

A deterministic corpus of real images (JPEG, PNG, WebP; 300 to 4000 px on the
long side; some with an EXIF rotation; a few cut short) is made once under
/tmp/crawler-bench/images and served by nginx on loopback. Each tool resizes
every image so that its smaller side is 256 (keep_ratio), re-encodes it as
JPEG and writes files, with 2 processes of C threads. Reported: images/s,
CPU-ms per image (the tool's whole process tree), peak RSS; and checks: every
output decodes, at the size keep_ratio gives. img2dataset runs from the venv
that ../shared/bench/setup.sh makes (/tmp/venv-i2d).

With ``--output-format webdataset`` the list is a CSV with a caption per URL,
and both tools write WebDataset tar shards (crawler ``--save-cols caption
--output-format webdataset``, img2dataset ``input_format="csv"
output_format="webdataset"``); the check reads every sample back from the tars.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import NGINX_PORT, OUT, WORK, measure, start_nginx

CORPUS = WORK / "images"
I2D_PYTHON = Path("/tmp/venv-i2d/bin/python")
TARGET = 256


def make_corpus(count: int) -> dict[str, tuple[int, int] | None]:
    """Write the images once; return each path's upright size (None: cut short on purpose)."""
    www, index = CORPUS / "www", CORPUS / "index.json"
    if index.exists():
        saved: dict[str, tuple[int, int] | None] = json.loads(index.read_text())
        if len(saved) == count:
            return {path: tuple(size) if size else None for path, size in saved.items()}  # type: ignore[misc]
        shutil.rmtree(CORPUS)
    rng = random.Random(20261201)
    (www / "img").mkdir(parents=True)
    sizes: dict[str, tuple[int, int] | None] = {}
    for number in range(count):
        long_side = int(math.exp(rng.uniform(math.log(300), math.log(4000))))
        short_side = int(long_side * rng.uniform(0.5, 1.0))
        width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
        kind = rng.choices(["jpg", "png", "webp"], [75, 15, 10])[0]
        image = Image.merge("RGB", [Image.effect_noise((width, height), rng.uniform(20, 80)) for _ in range(3)])
        path = f"img/{number:05d}.{kind}"
        options: dict[str, object] = {"quality": 85} if kind != "png" else {}
        upright = (width, height)
        if kind == "jpg" and rng.random() < 0.1:  # a camera held sideways
            exif = Image.Exif()
            exif[0x0112] = 6
            options["exif"] = exif.tobytes()
            upright = (height, width)
        image.save(www / path, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind], **options)
        if rng.random() < 0.02:  # cut short
            data = (www / path).read_bytes()
            (www / path).write_bytes(data[: len(data) // 3])
            sizes[path] = None
        else:
            sizes[path] = upright
    index.write_text(json.dumps(sizes))
    return sizes


def expected_size(width: int, height: int) -> tuple[int, int]:
    scale = TARGET / min(width, height)
    return round(width * scale), round(height * scale)


def check_crawler(out: Path, sizes: dict[str, tuple[int, int] | None], base: str) -> tuple[int, int]:
    """(outputs that decode at the keep_ratio size, outputs found)."""
    good = found = 0
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["status"] != "ok":
            continue
        found += 1
        original = sizes[record["url"].removeprefix(base)]
        with Image.open(out / record["path"]) as image:
            image.load()
            if original and image.size == expected_size(*original) == (record["width"], record["height"]):
                good += 1
    return good, found


def check_shards(out: Path, sizes: dict[str, tuple[int, int] | None], base: str) -> tuple[int, int]:
    """(samples whose JPEG decodes at the keep_ratio size, samples found) in every tar under ``out``."""
    good = found = 0
    for shard in out.rglob("*.tar"):
        with tarfile.open(shard) as tar:
            files: dict[str, dict[str, bytes]] = {}
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                body = tar.extractfile(member)
                if body is not None:
                    files.setdefault(key, {})[extension] = body.read()
        for sample in files.values():
            if "jpg" not in sample or "json" not in sample:
                continue
            found += 1
            meta = json.loads(sample["json"])
            original = sizes[meta["url"].removeprefix(base)]
            with Image.open(io.BytesIO(sample["jpg"])) as image:
                image.load()
                if original and all(abs(a - b) <= 1 for a, b in zip(image.size, expected_size(*original), strict=True)):
                    good += 1
    return good, found


def check_img2dataset(out: Path, sizes: dict[str, tuple[int, int] | None], base: str) -> tuple[int, int]:
    good = found = 0
    for meta in out.rglob("*.json"):
        if meta.name.endswith("_stats.json"):
            continue
        record = json.loads(meta.read_text())
        image_path = meta.with_suffix(".jpg")
        if record.get("status") != "success" or not image_path.exists():
            continue
        found += 1
        original = sizes[record["url"].removeprefix(base)]
        with Image.open(image_path) as image:
            image.load()
            # img2dataset rounds its own way: a pixel either side counts as the size asked for.
            if original and all(abs(a - b) <= 1 for a, b in zip(image.size, expected_size(*original), strict=True)):
                good += 1
    return good, found


I2D_DRIVER = """
import math, os, sys
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from img2dataset import download
if __name__ == "__main__":  # img2dataset spawns processes that import this file again
  urls, out, c, fmt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
  n = sum(1 for line in open(urls) if line.strip())
  table = dict(input_format="txt")
  if fmt == "webdataset":
    table = dict(input_format="csv", url_col="url", caption_col="caption")
  download(url_list=urls, output_folder=out, output_format=fmt, **table,
         processes_count=2, thread_count=c, image_size={target}, resize_mode="keep_ratio",
         encode_format="jpg", encode_quality=95, number_sample_per_shard=max(1, math.ceil(n / 2)),
         timeout=30, retries=0, enable_wandb=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--c", type=int, default=8, help="threads per process (2 processes)")
    parser.add_argument("--output-format", choices=("files", "webdataset"), default="files")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    shards = args.output_format == "webdataset"
    report = args.report or Path(__file__).parent / ("RESULTS-datasets.md" if shards else "RESULTS-images.md")
    started = time.monotonic()
    sizes = make_corpus(args.images)
    print(f"corpus: {len(sizes)} images in {time.monotonic() - started:.0f} s", flush=True)
    base = f"http://127.0.0.1:{NGINX_PORT}/"
    if shards:
        urls = WORK / "images-urls.csv"
        urls.write_text("url,caption\n" + "".join(f"{base}{path},image {path}\n" for path in sizes))
        # As img2dataset's number_sample_per_shard below: half the list, one shard per process.
        dataset = f"--save-cols caption --output-format webdataset --shard-size {math.ceil(len(sizes) / 2)} "
    else:
        urls = WORK / "images-urls.txt"
        urls.write_text("".join(base + path + "\n" for path in sizes))
        dataset = ""
    driver = WORK / "i2d_resize.py"
    driver.write_text(I2D_DRIVER.format(target=TARGET))
    peers = {
        "crawler": (
            f"{sys.executable} -m crawler run {urls} -o {{out}} -w 2 -t {2 * args.c} -q --resize {TARGET} "
            f"--resize-mode keep_ratio --image-format jpg --min-free 0 {dataset}",
            check_shards if shards else check_crawler,
        ),
        "img2dataset": (
            f"{I2D_PYTHON} {driver} {urls} {{out}} {args.c} {args.output_format}",
            check_shards if shards else check_img2dataset,
        ),
    }
    server = start_nginx(CORPUS / "www")
    rows = []
    try:
        for name, (command, check) in peers.items():
            samples, checks = [], (0, 0)
            for run in range(args.runs):
                out = OUT / f"images-{name}"
                shutil.rmtree(out, ignore_errors=True)
                result = measure(command.format(out=out), WORK / f"images-{name}-{run}.log")
                checks = check(out, sizes, base)
                samples.append(result)
                print(
                    f"[images] {name} run {run + 1}: {result['wall']:.2f} s, {checks[0]}/{checks[1]} good", flush=True
                )
            wall = statistics.median(sample["wall"] for sample in samples)
            cpu = statistics.median(sample["cpu"] for sample in samples)
            rss = max(sample["rss_largest"] for sample in samples)
            rows.append((name, checks, wall, checks[1] / wall, 1000 * cpu / max(checks[1], 1), rss))
    finally:
        server.terminate()
        server.wait()
    decodable = sum(1 for size in sizes.values() if size)
    lines = [
        "# Images: crawler --resize against img2dataset" + (", WebDataset shards out" if shards else ""),
        "",
        f"{len(sizes)} images ({decodable} decodable), {TARGET} px keep_ratio, JPEG out, 2 processes x {args.c} "
        f"threads, nginx on loopback; medians of {args.runs} runs. `python bench/images_bench.py --images "
        f"{args.images} --runs {args.runs} --c {args.c} --output-format {args.output_format}`.",
        "",
        "| tool | outputs (right size / saved) | wall s | images/s | CPU-ms per image | largest process RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, (good, found), wall, rate, cpu_ms, rss in rows:
        lines.append(f"| {name} | {good} / {found} | {wall:.2f} | {rate:.1f} | {cpu_ms:.0f} | {rss:.0f} |")
    if len(rows) == 2 and rows[1][3]:
        lines += ["", f"crawler / img2dataset, images/s: {rows[0][3] / rows[1][3]:.2f}x"]
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
