"""Real receivers for line outputs: a loopback HTTP webhook receiver (a thread running
http.server) that checks signatures and deduplicates, and a Mosquitto broker on a free
loopback port with persistence, restartable, plus an MQTT subscriber that deduplicates."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inspect_app.outputs.core import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)

SECRET = "a shared secret of the line's MES"
MOSQUITTO = Path("/usr/sbin/mosquitto")
# A receiver or broker that does not answer within this is broken; it is a guard, not a
# measurement (no test asserts on time).
GUARD_S = 60.0


def wait_for(condition: Callable[[], bool], what: str, guard_s: float = GUARD_S) -> None:
    deadline = time.monotonic() + guard_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., None]:
    """`wait_for(condition, what)`: poll until true; fail (with `what`) past the guard."""
    return wait_for


@dataclass
class WebhookReceiver:
    """What the line's MES would run: refuse a bad signature (401), deduplicate on the
    delivery id, keep what it accepted in arrival order."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request, as received
    accepted: list[dict[str, Any]] = field(default_factory=list)  # first time each delivery id
    duplicates: int = 0
    bad_signatures: int = 0
    fail_next: int = 0  # answer this many requests with a 500 first
    hold_seq: int | None = None  # on this seq: record it, then wait for `release` to answer
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: set[str] = field(default_factory=set)

    def handle(self, headers: Any, body: bytes) -> int:
        ok = verify_signature(
            SECRET, headers.get(TIMESTAMP_HEADER), body, headers.get(SIGNATURE_HEADER),
            now=time.time(),
        )  # fmt: skip
        payload = json.loads(body)
        with self.lock:
            self.requests.append(payload)
            if not ok:
                self.bad_signatures += 1
                return 401
            if headers.get(DELIVERY_HEADER) != payload["delivery_id"]:
                return 400
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500
            if payload["delivery_id"] in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(payload["delivery_id"])
                self.accepted.append(payload)
            hold = self.hold_seq is not None and payload["seq"] == self.hold_seq
        if hold:
            self.hold_seq = None
            self.held.set()
            self.release.wait(GUARD_S)
        return 200


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code = receiver.handle(self.headers, body)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender died while we held its request

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _install_mosquitto() -> None:
    """Debian's mosquitto, as scripts/system-deps.sh installs it (root only)."""
    import os

    if MOSQUITTO.exists() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"],
        env=env,
        check=False,
        capture_output=True,
    )


class Broker:
    """A Mosquitto on a loopback port; `restart` keeps its persistent sessions and retained
    messages (persistence on, saved at every change and at shutdown)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # as root it would drop to the mosquitto user, who cannot write the test's folder
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes true\n"
            "max_queued_messages 10000\n"
            f"log_dest file {self.log}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.skip(f"mosquitto exited at start: {self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, "mosquitto to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its database on the way out
            self.process.wait(30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    _install_mosquitto()
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed and cannot be (apt-get install mosquitto as root)")
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """The line's software on MQTT: a persistent session (clean_session false, QoS 1), so
    what is published while it or the broker is away reaches it later; deduplicates."""

    def __init__(self, broker: Broker, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.accepted: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.retained: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="line-mes", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(c, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            c.subscribe(topic, qos=1)
            self.connected.set()

        def on_disconnect(c, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            self.connected.clear()

        def on_message(c, userdata, message):  # type: ignore[no-untyped-def]
            payload = json.loads(message.payload)
            with self.lock:
                if message.topic.endswith("/last"):
                    self.retained[message.topic] = payload
                    return
                if payload["delivery_id"] in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(payload["delivery_id"])
                    self.accepted.append(payload)

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=5)
        self.client.loop_start()
        wait_for(self.connected.is_set, "the subscriber to connect")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_subscriber(mosquitto: Broker) -> Iterator[Callable[[str], Subscriber]]:
    made: list[Subscriber] = []

    def subscribe(topic: str) -> Subscriber:
        subscriber = Subscriber(mosquitto, topic)
        made.append(subscriber)
        return subscriber

    yield subscribe
    for subscriber in made:
        subscriber.close()
