"""The registry's reader-writer lock."""

from __future__ import annotations

import threading

import pytest

from plugwarden import RegistryTimeout
from plugwarden.host.rwlock import RWLock
from tests.conftest import wait_for


class TestRWLock:
    def test_readers_hold_the_lock_together(self):
        """Several readers are inside at once."""
        lock = RWLock()
        inside = threading.Barrier(4, timeout=10)
        errors = []

        def reader():
            with lock.read(timeout=10):
                try:
                    inside.wait()  # only passes if all four are inside together
                except threading.BrokenBarrierError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def test_waiting_writer_is_not_starved_by_new_readers(self):
        """Once a writer waits, a new reader queues behind it."""
        lock = RWLock()
        order = []
        first_reader = lock.read(timeout=5)
        first_reader.__enter__()
        writer_waiting = threading.Event()

        def writer():
            writer_waiting.set()
            with lock.write(timeout=10):
                order.append("writer")

        def late_reader():
            with lock.read(timeout=10):
                order.append("reader")

        w = threading.Thread(target=writer)
        w.start()
        writer_waiting.wait(5)
        wait_for(lambda: lock._writers_waiting == 1, what="the writer to queue")
        r = threading.Thread(target=late_reader)
        r.start()
        first_reader.__exit__(None, None, None)
        w.join(10)
        r.join(10)
        assert order == ["writer", "reader"]

    def test_acquisition_times_out_with_a_distinct_error(self):
        """A lock that cannot be had in time raises RegistryTimeout."""
        lock = RWLock()
        with lock.write(), pytest.raises(RegistryTimeout, match="read lock"), lock.read(0.05):
            pass

    def test_writer_that_gives_up_releases_queued_readers(self):
        """A timed-out writer no longer blocks readers."""
        lock = RWLock()
        with lock.read(timeout=1):
            with pytest.raises(RegistryTimeout), lock.write(timeout=0.05):
                pass
            with lock.read(timeout=0.5):
                pass
