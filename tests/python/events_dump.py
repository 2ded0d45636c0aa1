"""A monitor's view of Celery's events: consumes the `celeryev` exchange with kombu, as
`celery events` does, and appends each event to a file, one JSON object a line. Prints
`listening` once its queue is bound, then runs until killed.

Usage: python events_dump.py <broker url> <file>
"""
import json
import sys

from kombu import Connection, Consumer, Exchange, Queue

url, path = sys.argv[1], sys.argv[2]
with Connection(url) as connection, open(path, "a", encoding="utf-8") as out:
    channel = connection.channel()
    queue = Queue(exchange=Exchange("celeryev", type="topic"), routing_key="#", auto_delete=True, exclusive=True)

    def on_event(body, message):
        for event in body if isinstance(body, list) else [body]:
            out.write(json.dumps(event) + "\n")
            out.flush()

    with Consumer(channel, [queue], callbacks=[on_event], accept=["json"], no_ack=True):
        print("listening", flush=True)
        while True:
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                pass
