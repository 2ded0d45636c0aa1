"""Celery's canvas with Lepus workers: a chain, a link and an error link sent from the real Celery
client, run by Lepus workers. Prints what each case returned, one JSON object a line.

The Lepus jobs appear here as stubs: a signature needs only the task's name, and Lepus workers
run them. `py.record` and `py.on_error` are Python tasks that nobody runs in the test: the test
reads the messages Lepus sent them from the queue named by LEPUS_TEST_LINKS.

Usage: LEPUS_TEST_QUEUE=<queue> LEPUS_TEST_LINKS=<queue> LEPUS_TEST_TICKS=<file> python canvas.py
"""
import json
import os

from celery import chain

from celery_app import app

LINKS = os.environ["LEPUS_TEST_LINKS"]
TICKS = os.environ["LEPUS_TEST_TICKS"]


@app.task(name="demo.add")
def add(a, b):
    raise NotImplementedError("Lepus workers run demo.add")


@app.task(name="test.raise")
def raise_(message, exception=None, cause=None):
    raise NotImplementedError("Lepus workers run test.raise")


@app.task(name="test.tick")
def tick(path):
    raise NotImplementedError("Lepus workers run test.tick")


@app.task(name="py.record")
def record(*args):
    return args


@app.task(name="py.on_error")
def on_error(task_id):
    return task_id


def outcome(result):
    try:
        return {"state": "SUCCESS", "value": result.get(timeout=20)}
    except Exception as error:  # the failure Lepus sent, raised by Celery
        return {"state": result.state, "type": type(error).__name__, "message": str(error)}


def links():
    return {"link": record.s().set(queue=LINKS), "link_error": on_error.s().set(queue=LINKS)}


result = chain(add.s(2, 2), add.s(4), add.s(8)).apply_async()
print(json.dumps({"case": "chain", **outcome(result)}), flush=True)

linked = add.s(1, 2).set(**links()).apply_async()
print(json.dumps({"case": "link", "id": linked.id, **outcome(linked)}), flush=True)

failed = raise_.s(message="broken on purpose").set(**links()).apply_async()
print(json.dumps({"case": "link_error", "id": failed.id, **outcome(failed)}), flush=True)

broken = chain(add.s(1, 1), raise_.si(message="the middle fails"), tick.si(path=TICKS)).apply_async()
print(json.dumps({"case": "broken chain", **outcome(broken)}), flush=True)
