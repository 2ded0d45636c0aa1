"""A Celery app wired to a Lepus work queue, for the interop tests.

The queue named by LEPUS_TEST_QUEUE is declared exactly as Lepus declares it (quorum, dead-letter
queue `<name>.dlq`, delivery limit), and jobs are published through the default exchange with
the queue name as routing key, like Lepus does. Results travel over `rpc://`.
"""
import os

from celery import Celery
from kombu import Exchange, Queue

QUEUE = os.environ["LEPUS_TEST_QUEUE"]
BROKER = os.environ.get("LEPUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def lepus_queue(name, delivery_limit=5):
    """A kombu Queue with the arguments of a Lepus work queue."""
    return Queue(
        name,
        Exchange(""),
        routing_key=name,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dlq",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": delivery_limit,
        },
    )


app = Celery("lepus_interop", broker=BROKER, backend="rpc://")
app.conf.update(
    task_queues=[lepus_queue(QUEUE)],
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="py.multiply")
def multiply(a, b):
    return a * b


@app.task(name="py.fail")
def fail(message):
    raise ValueError(message)
