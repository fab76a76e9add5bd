"""Line outputs: every final decision and alarm change pushed to the line's software.

- `core`: pure rules (message bodies, the webhook signature, the backoff schedule, topics);
- `outbox`: the in-transaction write, destinations, the supervisors' views and replay;
- `transports`: a webhook POST and an MQTT publish;
- `worker`: the background thread that delivers, in order per line per destination.
"""
