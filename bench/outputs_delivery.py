"""What line outputs cost: the outbox write added to each decision's commit, and how many
messages a second one worker delivers to a loopback webhook and to a local Mosquitto.

1. Commit: N decisions committed one transaction each (an inspection row, as the pipeline's
   persist step writes it), without and with `enqueue_decision` in the same transaction
   (the sequence-row update and the message insert). Durable commits on SQLite (a file in a
   temporary folder) or on the PostgreSQL of ``--database-url``.
2. Delivery: N messages drained by one `OutputWorker` (`run_once` in a loop) to a webhook
   receiver on loopback (http.server in a thread, answering 200 at once) and, when
   ``/usr/sbin/mosquitto`` exists, to a Mosquitto on a free loopback port (QoS 1 plus the
   retained last state: two PUBACKs per message). Each message is one HTTP request or two
   publishes, plus the delivery's own commit.

Prints ms per commit with and without the outbox write and their ratio, and messages/s
per transport. Run: ``.venv/bin/python bench/outputs_delivery.py`` (``--help``).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.outputs.core import Backoff
from inspect_app.outputs.worker import OutputWorker
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection

MOSQUITTO = Path("/usr/sbin/mosquitto")


def _row(line_id: str) -> Inspection:
    return Inspection(
        line_id=line_id, image_sha256=uuid.uuid4().hex * 2, image_format="png", width=64,
        height=64, brightness=120.0, contrast=30.0, sharpness=200.0, level="full",
        pass_threshold=0.9, fail_threshold=0.9, route="auto", decision="pass",
        decided_by="model", model_version="bench",
    )  # fmt: skip


def commit_ms(engine: Engine, line_id: str, n: int, *, with_outbox: bool) -> float:
    started = time.perf_counter()
    for _ in range(n):
        with Session(engine) as session:
            row = _row(line_id)
            session.add(row)
            session.flush()
            if with_outbox:
                outbox.enqueue_decision(session, row, cause="model")
            session.commit()
    return (time.perf_counter() - started) * 1000 / n


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deliver_rate(engine: Engine, line_id: str, n: int, kind: str, url: str) -> float:
    with Session(engine) as session:
        add_line(session, line_id, "shadow")
        outbox.add_destination(
            session, line_id, kind=kind, url=url, secret="bench secret of sixteen+",
            actor="bench", reason="bench",
        )  # fmt: skip
    for _ in range(n):
        with Session(engine) as session:
            row = _row(line_id)
            session.add(row)
            session.flush()
            outbox.enqueue_decision(session, row, cause="model")
            session.commit()
    worker = OutputWorker(engine, backoff=Backoff(0.01, 0.1), batch=n)
    started = time.perf_counter()
    delivered = 0
    while delivered < n:
        delivered += worker.run_once()
    elapsed = time.perf_counter() - started
    worker.stop()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="decisions / messages per figure")
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        engine = make_engine(url)
        upgrade_database(engine)
        with Session(engine) as session:
            add_line(session, "bench-commit", "shadow")
        commit_ms(engine, "bench-commit", 20, with_outbox=True)  # warm up
        # interleaved blocks, so a change in the machine's load falls on both alike
        block = max(args.n // 10, 1)
        plain = with_outbox = 0.0
        for _ in range(10):
            plain += commit_ms(engine, "bench-commit", block, with_outbox=False) / 10
            with_outbox += commit_ms(engine, "bench-commit", block, with_outbox=True) / 10
        print(f"database: {engine.dialect.name}, {args.n} decisions, one commit each")
        print(f"  commit without outbox: {plain:.2f} ms; with outbox: {with_outbox:.2f} ms "
              f"(x{with_outbox / plain:.2f})")  # fmt: skip

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        rate = deliver_rate(engine, "bench-webhook", args.n, "webhook", hook)
        print(f"  webhook (loopback): {rate:.0f} messages/s")
        server.shutdown()

        if MOSQUITTO.exists():
            port = _free_port()
            config = Path(folder) / "mosquitto.conf"
            import getpass

            config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                              f"user {getpass.getuser()}\n")  # fmt: skip
            broker = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
                rate = deliver_rate(
                    engine, "bench-mqtt", args.n, "mqtt", f"mqtt://127.0.0.1:{port}"
                )
                print(f"  MQTT (local Mosquitto, QoS 1 + retained): {rate:.0f} messages/s")
            finally:
                broker.terminate()
                broker.wait(10)
        else:
            print("  MQTT: /usr/sbin/mosquitto not installed, not measured")
        engine.dispose()


if __name__ == "__main__":
    main()
