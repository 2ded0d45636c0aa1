"""Subscribes to Lepus events from kombu, as the README's "Subscribing from Python" shows (the
part between the README markers is the README's snippet, word for word: the interop test checks
it), and checks each event against the README's wire format.

Declares its own queue (exclusive, auto-deleted when it disconnects) bound to the topic exchange
`lepus.events` (passive: Lepus declares it) with <pattern>, prints `ready` once bound, then
consumes until <count> events of <run> (body field "run"; other runs' events are acked and
skipped) have arrived, printing one JSON line each: routing_key, body, headers, properties.
Exits 1 if <timeout> seconds pass first, 2 on a message that is not a well-formed Lepus event.

Usage: python subscribe_events.py <queue> <pattern> <run> <count> [timeout seconds, default 60]
"""
import os
import sys
import time

# --- README: subscribing from Python
import datetime, json
import kombu

def lepus_events_queue(name, *patterns):
    """A queue of one's own on Lepus's events: bound to the topic exchange `lepus.events`,
    which Lepus declares (passive here), with event names or patterns (`orders.*`, `#.created`)."""
    exchange = kombu.Exchange("lepus.events", "topic", passive=True)
    bindings = [kombu.binding(exchange, routing_key=pattern) for pattern in patterns]
    return kombu.Queue(name, bindings=bindings, exclusive=True, auto_delete=True)

def read_event(message):
    """An event's name, id, time, key and body, as the Lepus headers and properties say."""
    headers, properties = message.headers, message.properties
    name = headers.get("x-lepus-event") or properties["type"]
    event_id = headers.get("x-lepus-event-id") or properties["message_id"]
    at = headers.get("x-lepus-occurred-at")
    occurred_at = (datetime.datetime.fromisoformat(at.replace("Z", "+00:00")) if at else
                   datetime.datetime.fromtimestamp(properties["timestamp"], datetime.timezone.utc))
    return name, event_id, occurred_at, headers.get("x-lepus-key"), json.loads(message.body)
# --- README: end


def slot(s):  # as publish_events.py (and Lepus) computes it
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % 64


def malformed(message, why):
    print(f"malformed event ({why}): headers {message.headers!r}, properties {message.properties!r}, "
          f"body {message.body!r}", file=sys.stderr, flush=True)
    sys.exit(2)


def check(message, routing_key):
    """Checks a message against the README's "Events on the wire"; returns its body."""
    headers, properties = message.headers, message.properties
    try:
        name, event_id, occurred_at, key, body = read_event(message)
    except (KeyError, ValueError) as e:
        malformed(message, f"unreadable: {e!r}")
    expected = {
        "x-lepus-event": (headers.get("x-lepus-event"), name),
        "type": (properties.get("type"), name),
        "routing key": (routing_key, name),
        "x-lepus-event-id": (headers.get("x-lepus-event-id"), event_id),
        "message_id": (properties.get("message_id"), event_id),
        "content_type": (message.content_type, "application/json"),
        "delivery_mode": (properties.get("delivery_mode"), 2),
        "timestamp": (properties.get("timestamp"), int(occurred_at.timestamp())),
        "x-lepus-slot": (headers.get("x-lepus-slot"), slot(key if key is not None else event_id)),
    }
    for what, (got, want) in expected.items():
        if got != want:
            malformed(message, f"{what} is {got!r}, not {want!r}")
    at = headers.get("x-lepus-occurred-at")
    if not isinstance(at, str) or len(at) != 24 or not at.endswith("Z") or at[19] != ".":
        malformed(message, f"x-lepus-occurred-at {at!r} is not RFC 3339 with milliseconds, UTC")
    if not isinstance(body, dict):
        malformed(message, "the body is not a JSON object")
    return body


def main():
    queue_name, pattern, run, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    url = os.environ.get("LEPUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    received = []

    def on_message(message):
        body = check(message, message.delivery_info.get("routing_key"))
        message.ack()
        if body.get("run") != run:
            return
        received.append(body)
        properties = {k: message.properties.get(k) for k in ("message_id", "type", "timestamp", "delivery_mode")}
        properties["content_type"] = message.content_type
        print(json.dumps({"routing_key": message.delivery_info.get("routing_key"), "body": body,
                          "headers": message.headers, "properties": properties}), flush=True)

    with kombu.Connection(url) as conn:
        queue = lepus_events_queue(queue_name, pattern)
        # The raw body: check() decodes it itself, and a body that is not JSON is malformed.
        with kombu.Consumer(conn, [queue], on_message=on_message, accept=["json"]):
            print("ready", flush=True)
            deadline = time.monotonic() + timeout
            while len(received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"timed out: {len(received)} of {count} events in {timeout} s", file=sys.stderr, flush=True)
                    sys.exit(1)
                try:
                    conn.drain_events(timeout=min(left, 1.0))
                except TimeoutError:
                    pass
    # The queue is exclusive: the broker deletes it with the connection.


if __name__ == "__main__":
    main()
