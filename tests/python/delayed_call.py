"""Sends delayed Lepus demo jobs from Python Celery and prints, per case, the result and how long
it took, one JSON object a line.

- "native": the queue is bound to a topic exchange, so Celery 5.5 uses its native delayed
  delivery and publishes into the shared `celery_delayed_*` cascade itself.
- "eta": the README's configuration (direct exchange): Celery sends the job straight to the queue
  with a future `eta`, and the Lepus worker forwards it into the cascade.

Usage: LEPUS_TEST_QUEUE=<queue> python delayed_call.py
"""
import json
import time

from celery import Celery
from kombu import Exchange, Queue

from celery_app import BROKER, QUEUE, lepus_queue

for case, exchange in (("native", Exchange(QUEUE + ".topic", type="topic")), ("eta", None)):
    queue = lepus_queue(QUEUE)
    if exchange is not None:
        queue = Queue(QUEUE, exchange, routing_key=QUEUE, queue_arguments=queue.queue_arguments)
    app = Celery("lepus_delayed_" + case, broker=BROKER, backend="rpc://")
    app.conf.update(task_queues=[queue], task_default_queue=QUEUE, task_serializer="json", result_serializer="json")
    started = time.monotonic()
    result = app.send_task("demo.add", args=[40, 2], queue=QUEUE, countdown=2)
    value = result.get(timeout=30)
    print(json.dumps({"case": case, "value": value, "seconds": round(time.monotonic() - started, 3)}), flush=True)
    if exchange is not None:
        with app.connection_for_write() as connection:
            connection.default_channel.exchange_delete(exchange.name)  # leave nothing behind
    app.close()
