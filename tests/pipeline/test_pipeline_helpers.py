"""The pipeline tests' own helpers where a mistake would hide: coping with dvc queue workers that stop too early
or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pipeline_helpers
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


def test_run_queue_starts_workers_again_only_when_all_are_gone_on_two_looks(tmp_path, monkeypatch):
    """The remedy for dvc-task's early idle shutdown, with dvc replaced by a script of statuses: a worker-less
    look followed by one with workers restarts nothing; two worker-less looks in a row restart once."""
    queued, done = "abc  exp-1  Queued\nWorker status: 0 active, 0 idle", "abc  exp-1  Success\n"
    looks = iter([(queued, []), (queued, [1]), (queued, []), (queued, []), (queued, [1]), (done, [])])
    current = {}

    def fake_run(project, *command, **kwargs):
        status, current["pids"] = next(looks)
        return types.SimpleNamespace(stdout=status)

    starts = []
    monkeypatch.setattr(pipeline_helpers, "run", fake_run)
    monkeypatch.setattr(pipeline_helpers, "start_queue_workers", lambda *args: starts.append(args))
    monkeypatch.setattr(pipeline_helpers, "queue_worker_pids", lambda project: current["pids"])
    monkeypatch.setattr(pipeline_helpers, "stop_queue_workers", lambda project: [])
    monkeypatch.setattr(pipeline_helpers.time, "sleep", lambda seconds: None)
    status, handled = pipeline_helpers.run_queue(tmp_path / "project", jobs=2)
    assert status == done
    assert len(starts) == 2 and handled == ["every worker gone with a task queued: dvc queue start again"]
