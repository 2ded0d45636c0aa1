"""Sends N demo.add jobs from Python Celery and waits for each result; prints them as one JSON list.

Usage: LEPUS_TEST_QUEUE=<queue> LEPUS_TEST_JOBS=<N> python send_adds.py
"""
import json
import os

from celery_app import QUEUE, app

n = int(os.environ.get("LEPUS_TEST_JOBS", "10"))
results = [app.send_task("demo.add", args=[i, i], queue=QUEUE) for i in range(n)]
print(json.dumps([{"id": r.id, "value": r.get(timeout=30)} for r in results]), flush=True)
