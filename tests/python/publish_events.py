"""Publishes Lepus events from kombu, as the README's "Publishing from Python" shows (the part
between the README markers is the README's snippet, word for word: the interop test checks it).

Prints one JSON line per event published and confirmed: seq, id, key, slot, occurred_at,
timestamp (what a Lepus service must read back).

Usage: python publish_events.py <event name> <run> <count> [keys] [plain | no-id] [routing key]
  keys: events are keyed key-0 .. key-<keys-1> in turn (0: no key; default 10)
  plain: no x-lepus-* headers, only the properties type, message_id and timestamp
  no-id: as plain, without message_id either (not an event Lepus can read)
  routing key: of a plain or no-id event (default: the event name)
The body of event <seq> is {"run": <run>, "seq": <seq>, "key": <key>}.
"""
import os
import sys

# --- README: publishing from Python
import datetime, json, uuid
import kombu

def slot(s):  # FNV-1a, 32 bits, mod 64: as Lepus computes it (lepus::event::slot_of)
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % 64

def publish_event(producer, name, event, key=None):
    """Publishes `event` (a dict) as the Lepus event `name`; returns its id and headers."""
    now = datetime.datetime.now(datetime.timezone.utc)
    event_id = str(uuid.uuid4())
    headers = {"x-lepus-event": name, "x-lepus-event-id": event_id,
               "x-lepus-occurred-at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "x-lepus-slot": slot(key if key is not None else event_id)}
    if key is not None:
        headers["x-lepus-key"] = key
    producer.publish(
        json.dumps(event), exchange="lepus.events.in", routing_key=name,
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        message_id=event_id, timestamp=int(now.timestamp()), type=name, headers=headers,
        declare=[])
    return event_id, headers
# --- README: end


def publish_plain(producer, name, event, with_id, routing_key):
    """A plain AMQP event: no Lepus headers, only the properties (and no message_id unless
    `with_id`). Returns its id (None without) and its time."""
    now = datetime.datetime.now(datetime.timezone.utc)
    event_id = str(uuid.uuid4()) if with_id else None
    properties = {"type": name, "timestamp": int(now.timestamp())}
    if event_id:
        properties["message_id"] = event_id
    producer.publish(
        json.dumps(event), exchange="lepus.events.in", routing_key=routing_key,
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        declare=[], **properties)
    return event_id, now


def main():
    name, run, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keys = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    mode = sys.argv[5] if len(sys.argv) > 5 else "headers"
    routing_key = sys.argv[6] if len(sys.argv) > 6 else name
    url = os.environ.get("LEPUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    # confirm_publish: each publish returns once the broker has confirmed it.
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = kombu.Producer(conn)
        for seq in range(count):
            key = f"key-{seq % keys}" if keys else None
            event = {"run": run, "seq": seq, "key": key}
            if mode == "headers":
                event_id, headers = publish_event(producer, name, event, key=key)
                occurred_at, at_slot = headers["x-lepus-occurred-at"], headers["x-lepus-slot"]
                timestamp = int(datetime.datetime.fromisoformat(occurred_at.replace("Z", "+00:00")).timestamp())
            elif mode in ("plain", "no-id"):
                event_id, now = publish_plain(producer, name, event, mode == "plain", routing_key)
                occurred_at, at_slot = None, None
                timestamp = int(now.timestamp())
            else:
                sys.exit(f"unknown mode {mode}")
            print(json.dumps({"seq": seq, "id": event_id, "key": key, "slot": at_slot,
                              "occurred_at": occurred_at, "timestamp": timestamp}), flush=True)


if __name__ == "__main__":
    main()
