"""How a message leaves the service: a signed webhook POST, or an MQTT publish at QoS 1.

`send` returns when the receiver has the message (a 2xx answer; the broker's PUBACK) and
raises `DeliveryFailed` otherwise, saying why, for the delivery's `last_error`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt

from inspect_app.outputs.core import body_of, last_state_topic, signed_headers, topic

logger = logging.getLogger(__name__)

MQTT_DEFAULT_PORT = 1883


class DeliveryFailed(Exception):
    pass


class Transport(Protocol):
    def send(self, payload: dict, *, kind: str, line_id: str, retain_last: bool) -> None: ...

    def close(self) -> None: ...


class WebhookTransport:
    """POST the JSON body, signed (core.signature) with a fresh timestamp on every attempt."""

    def __init__(self, url: str, secret: str, *, timeout_seconds: float) -> None:
        self.url = url
        self.secret = secret
        self.client = httpx.Client(timeout=timeout_seconds, follow_redirects=False)

    def send(self, payload: dict, *, kind: str, line_id: str, retain_last: bool) -> None:
        body = body_of(payload)
        headers = signed_headers(self.secret, int(time.time()), body, payload["delivery_id"])
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self.client.close()


class MqttTransport:
    """Publish at QoS 1 to `<prefix>/<line>/<kind>`, and the same message retained to
    `<prefix>/<line>/<kind>/last`. Delivered once the broker acknowledged both (PUBACK);
    the connection is kept and made again after any failure."""

    def __init__(self, url: str, topic_prefix: str, *, timeout_seconds: float) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.host = parts.hostname
        self.port = parts.port or MQTT_DEFAULT_PORT
        self.prefix = topic_prefix
        self.timeout = timeout_seconds
        self.client: mqtt.Client | None = None
        self._connected = threading.Event()

    def _connect(self) -> mqtt.Client:
        if self.client is not None and self._connected.is_set():
            return self.client
        self.close()
        self._connected.clear()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"inspect-app-{uuid.uuid4().hex[:12]}",
            clean_session=True,
        )

        def on_connect(c, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            if not reason_code.is_failure:
                self._connected.set()

        def on_disconnect(c, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            self._connected.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise DeliveryFailed(f"cannot reach broker {self.host}:{self.port}: {exc}") from exc
        client.loop_start()
        self.client = client
        if not self._connected.wait(self.timeout):
            self.close()
            raise DeliveryFailed(f"broker {self.host}:{self.port} did not accept the connection")
        return client

    def _publish(self, client: mqtt.Client, name: str, body: bytes, retain: bool) -> None:
        info = client.publish(name, body, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.close()
            raise DeliveryFailed(f"publish to {name} failed: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            self.close()
            raise DeliveryFailed(f"publish to {name} failed: {exc}") from exc
        if not info.is_published():
            self.close()
            raise DeliveryFailed(f"broker did not acknowledge {name} within {self.timeout:g} s")

    def send(self, payload: dict, *, kind: str, line_id: str, retain_last: bool) -> None:
        body = body_of(payload)
        client = self._connect()
        self._publish(client, topic(self.prefix, line_id, kind), body, retain=False)
        if retain_last:
            self._publish(client, last_state_topic(self.prefix, line_id, kind), body, retain=True)

    def close(self) -> None:
        client, self.client = self.client, None
        self._connected.clear()
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
