"""Sends a demo.add job due in 3 s from Python Celery, revokes it with Celery's remote control,
and prints how its result came back (expected: REVOKED, TaskRevokedError), as one JSON object.

Usage: LEPUS_TEST_QUEUE=<queue> python revoke_delayed.py
"""
import json

from celery_app import QUEUE, app

result = app.send_task("demo.add", args=[2, 3], queue=QUEUE, countdown=3)
app.control.revoke(result.id)
try:
    value = result.get(timeout=30)
    print(json.dumps({"id": result.id, "state": result.state, "value": value}), flush=True)
except Exception as error:
    print(json.dumps({"id": result.id, "state": result.state, "error_type": type(error).__name__}), flush=True)
