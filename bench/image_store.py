"""What each image store costs at ingestion: images/s persisted, per store, in one run.

The persist step of `InspectionPipeline` (`_stage`, then the group's commit) for each
store: the image's bytes to the store (`put`, with the row's session) and the inspection
row, in one commit. Decoding and
the model are left out: they cost the same whatever the store, and the model (tens of ms
per image) would hide the difference this bench is for. The images are the committed
sample set (``data/samples``, PNGs as a line camera sends them), each made distinct by a
counter, so no write is a duplicate.

Stores and databases, each with durable commits (fsync on; PostgreSQL started by the bench
with its defaults: fsync, synchronous_commit and full_page_writes on):

- ``local`` + SQLite: the embedded default (one process);
- ``local`` + PostgreSQL: files in the data folder beside a PostgreSQL database (what
  several processes had before: each its own folder, which is why it is not shared);
- ``database`` + PostgreSQL: the bytes as ``bytea`` in the row's transaction (the default
  for several processes);
- ``database`` + SQLite: for completeness.

A shared mount (NFS, CephFS) is the local store on another filesystem: it cannot be
measured on this machine, and its cost is that filesystem's fsync and rename latency.

Prints images/s per store with one writer and with `--threads` concurrent writers (as the
service's worker threads are), MB/s, and each figure's ratio to ``local`` + the same
database. Run: ``.venv/bin/python bench/image_store.py`` (``--help``).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postgres_server import durable_postgres  # bench/ helper
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.lines import add_line
from inspect_app.settings import SAMPLES_DIR
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.images import DatabaseImageStore, ImageStore, LocalImageStore
from inspect_app.storage.tables import Inspection

LINE = "bench"


def sample_images() -> list[bytes]:
    paths = sorted(glob.glob(str(SAMPLES_DIR / "*" / "*.png")))
    if not paths:
        raise SystemExit(f"no sample images under {SAMPLES_DIR}")
    return [Path(p).read_bytes() for p in paths]


def persist(engine: Engine, store: ImageStore, data: bytes) -> None:
    """The pipeline's persist step, as `InspectionPipeline._stage` and its group commit do it."""
    with Session(engine) as session:
        sha256 = store.put(data, session=session)
        session.add(
            Inspection(
                line_id=LINE, image_sha256=sha256, image_format="png", width=256, height=256,
                brightness=100.0, contrast=20.0, sharpness=50.0, level="shadow",
                pass_threshold=None, fail_threshold=None, route="review", decision="pending",
            )
        )  # fmt: skip
        session.commit()


def run(
    engine: Engine, store: ImageStore, images: list[bytes], count: int, threads: int, tag: int
) -> tuple[float, float]:
    """images/s and MB/s of `count` persists by `threads` writers."""
    counter = iter(range(count))
    lock = threading.Lock()
    written = [0]

    def writer() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            data = images[i % len(images)] + f"|{tag}-{i}".encode()  # distinct bytes
            persist(engine, store, data)
            with lock:
                written[0] += len(data)

    pool = [threading.Thread(target=writer) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    return count / elapsed, written[0] / elapsed / 1e6


def fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade_database(engine)
    with Session(engine) as session:
        add_line(session, LINE)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="images per store and mode")
    parser.add_argument("--threads", type=int, default=4, help="concurrent writers")
    parser.add_argument(
        "--database-url", help="a PostgreSQL database to use (default: start a durable one)"
    )
    args = parser.parse_args()
    images = sample_images()
    mean_kb = sum(map(len, images)) / len(images) / 1e3
    print(f"{len(images)} sample images, mean {mean_kb:.0f} kB; {args.count} persists each")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    with (
        tempfile.TemporaryDirectory(prefix="bench-store-") as tmp,
        durable_postgres() if args.database_url is None else _given(args.database_url) as pg_url,
    ):
        base = Path(tmp)
        urls = {"sqlite": f"sqlite:///{base / 'bench.db'}", "postgresql": pg_url}
        results: dict[tuple[str, str, int], float] = {}
        mbs: dict[tuple[str, str, int], float] = {}
        tag = 0
        for db_name, url in urls.items():
            engine = fresh_engine(url)
            for kind in ("local", "database"):
                store: ImageStore = (
                    LocalImageStore(base / f"{db_name}-images")
                    if kind == "local"
                    else DatabaseImageStore(engine)
                )
                for threads in (1, args.threads):
                    if db_name == "sqlite" and threads > 1:
                        continue  # SQLite: the embedded, one-process case
                    tag += 1
                    rate, mb = run(engine, store, images, args.count, threads, tag)
                    results[(kind, db_name, threads)] = rate
                    mbs[(kind, db_name, threads)] = mb
            engine.dispose()

    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"{'store':<10}{'database':<12}{'writers':>8}{'images/s':>10}{'MB/s':>8}{'vs local':>10}")
    for (kind, db_name, threads), rate in results.items():
        local = results.get(("local", db_name, threads))
        ratio = f"{rate / local:.2f}" if local else "-"
        print(
            f"{kind:<10}{db_name:<12}{threads:>8}{rate:>10.1f}"
            f"{mbs[(kind, db_name, threads)]:>8.1f}{ratio:>10}"
        )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
