"""Sends a demo.add job due in 3 s from Python Celery, revokes it, and prints how its result came
back (expected: REVOKED, TaskRevokedError), as one JSON object. The revoke goes through Celery's
remote control, or, with LEPUS_REVOKE_COMMAND set to the `lepus` binary, `lepus revoke ID`.

Usage: LEPUS_TEST_QUEUE=<queue> [LEPUS_REVOKE_COMMAND=<lepus>] python revoke_delayed.py
"""
import json
import os
import subprocess

from celery_app import QUEUE, app

result = app.send_task("demo.add", args=[2, 3], queue=QUEUE, countdown=3)
command = os.environ.get("LEPUS_REVOKE_COMMAND")
if command:
    subprocess.run([command, "revoke", result.id], check=True, stdout=subprocess.DEVNULL)
else:
    app.control.revoke(result.id)
try:
    value = result.get(timeout=30)
    print(json.dumps({"id": result.id, "state": result.state, "value": value}), flush=True)
except Exception as error:
    print(json.dumps({"id": result.id, "state": result.state, "error_type": type(error).__name__}), flush=True)
