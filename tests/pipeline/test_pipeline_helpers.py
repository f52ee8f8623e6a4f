"""The pipeline tests' own helpers where a mistake would hide: ending queue workers that dvc left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline_helpers import stop_queue_workers


def test_stop_queue_workers_kills_a_worker_left_running_and_nothing_else(tmp_path):
    celery = tmp_path / ".dvc" / "tmp" / "exps" / "celery"
    celery.mkdir(parents=True)
    # a stand-in for a worker that missed its shutdown: its command line names it a queue worker, as dvc's does
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "exp", "queue-worker"],
                             start_new_session=True)
    (celery / "dvc-exp-worker-1.json").write_text(json.dumps({"pid": stuck.pid}))
    (celery / "dvc-exp-worker-2.json").write_text(json.dumps({"pid": os.getpid()}))  # alive, but not a worker
    (celery / "dvc-exp-worker-3.json").write_text(json.dumps({"pid": None}))  # a worker that never started
    try:
        assert stop_queue_workers(tmp_path, grace=1) == [stuck.pid]
        assert stuck.wait(timeout=30) == -9
    finally:
        if stuck.poll() is None:
            stuck.kill()
