"""Sends test.flaky jobs from Python Celery with Lepus's rate-limit headers, as the README shows:
LEPUS_TEST_JOBS of them at LEPUS_TEST_RATE under the key LEPUS_TEST_RATE_KEY, then one with the
malformed rate "abc/s". Records go to LEPUS_TEST_RECORD. Prints the ids as one JSON object.

Usage: LEPUS_TEST_QUEUE=<queue> LEPUS_TEST_JOBS=<N> LEPUS_TEST_RATE=5/s LEPUS_TEST_RATE_KEY=<key>
       LEPUS_TEST_RECORD=<file> python rate_limited.py
"""
import json
import os

from celery_app import QUEUE, app

n = int(os.environ["LEPUS_TEST_JOBS"])
rate = os.environ["LEPUS_TEST_RATE"]
key = os.environ["LEPUS_TEST_RATE_KEY"]
job = {"fail_times": 0, "record": os.environ["LEPUS_TEST_RECORD"]}
limited = [
    app.send_task("test.flaky", kwargs=job, queue=QUEUE,
                  headers={"x-lepus-rate-limit": rate, "x-lepus-rate-key": key})
    for _ in range(n)
]
bad = app.send_task("test.flaky", kwargs=job, queue=QUEUE, headers={"x-lepus-rate-limit": "abc/s"})
print(json.dumps({"limited": [r.id for r in limited], "bad": bad.id}), flush=True)
