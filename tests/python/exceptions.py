"""Lepus jobs that fail naming an exception class: Celery raises that class in Python, so
`except ValueError` works around `AsyncResult.get()`. Prints what was caught, one JSON object a
line.

Usage: LEPUS_TEST_QUEUE=<queue> python exceptions.py
"""
import json

from celery_app import QUEUE, app


def caught(kwargs):
    result = app.send_task("test.raise", kwargs=kwargs, queue=QUEUE)
    try:
        result.get(timeout=20)
        return {"caught": None}
    except ValueError as error:
        return {"caught": "ValueError", "message": str(error)}
    except Exception as error:  # a class Celery made up from the name
        return {"caught": "other", "type": type(error).__name__, "message": str(error)}


print(json.dumps(caught({"message": "width must be positive", "exception": "builtins.ValueError"})), flush=True)
print(json.dumps(caught({"message": "too big", "exception": "ImageTooLarge", "cause": "4096 > 2048"})), flush=True)
