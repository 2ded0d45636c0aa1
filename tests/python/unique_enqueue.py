"""Enqueues a Lepus unique job from Python, following the protocol in the README ("Unique jobs"):
declare the key's lock and holder queues, publish the lock with a publisher confirm; acked, send
the task with `x-lepus-unique-key` and write its id as the holder; nacked, read the holder's id.

Usage: LEPUS_TEST_QUEUE=<queue> LEPUS_UNIQUE_KEY=<key> LEPUS_TEST_JOBS=<N> python unique_enqueue.py
Prints one JSON line per enqueue: {"id": <the id answered>, "sent": <whether a task was sent>}.
"""
import json
import os
import time
import uuid
from urllib.parse import unquote, urlparse

import amqp

from celery_app import QUEUE, app

BROKER = os.environ.get("LEPUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KEY = os.environ["LEPUS_UNIQUE_KEY"]
TTL_MS = 60_000


def connect():
    url = urlparse(BROKER)
    vhost = unquote(url.path[1:]) or "/"
    connection = amqp.Connection(
        f"{url.hostname}:{url.port or 5672}",
        userid=unquote(url.username or "guest"),
        password=unquote(url.password or "guest"),
        virtual_host=vhost,
        confirm_publish=True,
    )
    connection.connect()
    return connection


def enqueue_unique(connection, kwargs):
    """The task's id if this call sent it, else the holder's; and whether it sent one."""
    lock_queue, holder_queue = f"lepus.unique.{KEY}", f"lepus.unique-holder.{KEY}"
    task_id = str(uuid.uuid4())
    for _ in range(200):
        channel = connection.channel()
        channel.queue_declare(lock_queue, durable=True, auto_delete=False, arguments={
            "x-max-length": 1, "x-overflow": "reject-publish",
            "x-message-ttl": TTL_MS, "x-expires": TTL_MS + 1000,
        })
        channel.queue_declare(holder_queue, durable=True, auto_delete=False, arguments={
            "x-max-length": 1, "x-expires": TTL_MS + 1000,
        })
        lock = amqp.Message(task_id, content_type="text/plain", delivery_mode=2)
        try:
            channel.basic_publish(lock, exchange="", routing_key=lock_queue, mandatory=True)
        except amqp.exceptions.MessageNacked:
            holder = channel.basic_get(holder_queue, no_ack=False)
            if holder is not None:
                channel.basic_reject(holder.delivery_tag, requeue=True)
                channel.close()
                body = holder.body.decode() if isinstance(holder.body, bytes) else holder.body
                return body, False
            channel.close()
            time.sleep(0.01)
            continue
        app.send_task("unique.work", kwargs=kwargs, queue=QUEUE, task_id=task_id,
                      headers={"x-lepus-unique-key": KEY})
        announced = amqp.Message(task_id, content_type="text/plain", delivery_mode=2,
                                 expiration=str(TTL_MS - 1000))
        channel.basic_publish(announced, exchange="", routing_key=holder_queue, mandatory=True)
        channel.close()
        return task_id, True
    raise RuntimeError(f"no holder id appeared for key {KEY}")


connection = connect()
kwargs = {"typed_key": None, "sleep_ms": int(os.environ.get("LEPUS_TEST_SLEEP_MS", "0")), "fail_first": 0}
for _ in range(int(os.environ.get("LEPUS_TEST_JOBS", "1"))):
    answered, sent = enqueue_unique(connection, kwargs)
    print(json.dumps({"id": answered, "sent": sent}), flush=True)
connection.close()
