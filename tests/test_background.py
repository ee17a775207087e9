"""SerialWorker: order, error hand-over and shutdown, on a real thread."""

from __future__ import annotations

import threading

import pytest

from ndstream.ingestion.worker import SerialWorker


def test_jobs_run_in_submission_order_on_another_thread():
    seen: list[int] = []
    threads: set[int] = set()

    def job(i: int) -> None:
        seen.append(i)
        threads.add(threading.get_ident())

    with SerialWorker(max_pending=3) as worker:
        for i in range(200):
            worker.submit(job, i)
    # leaving the block waited for every job
    assert seen == list(range(200))
    assert threads and threading.get_ident() not in threads


def test_a_failing_job_is_raised_in_the_caller_and_later_jobs_are_skipped():
    ran: list[int] = []

    def job(i: int) -> None:
        if i == 3:
            raise ValueError("bad batch 3")
        ran.append(i)

    worker = SerialWorker()
    with pytest.raises(ValueError, match="bad batch 3"):
        for i in range(50):
            worker.submit(job, i)  # raises here once job 3 has failed ...
        worker.close()  # ... or here, if it had not failed yet
    worker.close()  # the error is raised once; closing again is quiet
    assert ran == [0, 1, 2]


def test_an_error_in_the_caller_skips_queued_jobs_and_stops_the_thread():
    release = threading.Event()
    ran: list[int] = []

    def job(i: int) -> None:
        release.wait(5)  # the first job blocks the thread while the others wait in the queue
        ran.append(i)

    worker = SerialWorker(max_pending=4)
    with pytest.raises(RuntimeError, match="caller failed"), worker:
        for i in range(4):
            worker.submit(job, i)
        threading.Timer(0.2, release.set).start()  # after the queue has been emptied
        raise RuntimeError("caller failed")
    assert not worker._thread.is_alive()
    # only a job already running when the caller failed may have finished, none queued
    assert ran in ([], [0])
