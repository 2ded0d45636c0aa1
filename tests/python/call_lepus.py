"""Sends Lepus demo jobs from Python Celery and prints what came back, one JSON object a line.

Usage: LEPUS_TEST_QUEUE=<queue> python call_lepus.py
"""
import json

from celery_app import QUEUE, app


def outcome(result):
    try:
        value = result.get(timeout=20)
        return {"state": result.state, "value": value}
    except Exception as error:  # the job's failure, re-raised by Celery
        return {"state": result.state, "error_type": type(error).__name__, "error": str(error)}


print(json.dumps({"job": "demo.add", **outcome(app.send_task("demo.add", args=[2, 3], queue=QUEUE))}), flush=True)
print(json.dumps({"job": "demo.add kwargs", **outcome(app.send_task("demo.add", kwargs={"a": 20, "b": 22}, queue=QUEUE))}), flush=True)
failing = app.send_task("demo.fail", kwargs={"message": "it broke on purpose"}, queue=QUEUE)
print(json.dumps({"job": "demo.fail", **outcome(failing)}), flush=True)
