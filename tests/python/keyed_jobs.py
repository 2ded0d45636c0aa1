"""Sends N test.keyed jobs from Python Celery with a concurrency key in the headers and prints
each result (when the handler ran, in which process) as one JSON list.

Usage: LEPUS_TEST_QUEUE=<queue> LEPUS_TEST_KEY=<key> LEPUS_TEST_LIMIT=<limit> LEPUS_TEST_JOBS=<N>
python keyed_jobs.py
"""
import json
import os

from celery_app import QUEUE, app

key = os.environ["LEPUS_TEST_KEY"]
limit = int(os.environ["LEPUS_TEST_LIMIT"])
n = int(os.environ.get("LEPUS_TEST_JOBS", "12"))
headers = {"x-lepus-concurrency-key": key, "x-lepus-concurrency-limit": limit}
results = [
    app.send_task("test.keyed", kwargs={"key": key, "limit": limit, "sleep_ms": 300}, queue=QUEUE, headers=headers)
    for _ in range(n)
]
print(json.dumps([r.get(timeout=60) for r in results]), flush=True)
