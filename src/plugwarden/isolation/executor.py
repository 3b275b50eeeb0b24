"""Threads for inline plugins: a :class:`Task` is one unit of work,
finished exactly once (by the plugin, or by a guard that gives up on it);
an :class:`ElasticExecutor` runs tasks on threads that grow when all are
busy (or stuck in a hung plugin) and retire when idle."""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["ElasticExecutor", "Task"]


class Task:
    """One unit of work handed to an executor thread; finished exactly once."""

    __slots__ = (
        "_done",
        "_finish_lock",
        "_finished",
        "args",
        "error",
        "function",
        "guard",
        "value",
    )

    def __init__(self, function: Any, args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.guard: tuple[str, int] | None = None
        self._done = threading.Lock()
        self._done.acquire()
        self._finish_lock = threading.Lock()
        self._finished = False

    def run(self) -> None:
        try:
            value = self.function(*self.args)
        # A broad except is what this library is for: the executor thread
        # must survive whatever the plugin does.
        except BaseException as exc:  # noqa: BLE001
            self._finish(None, exc, None)
        else:
            self._finish(value, None, None)

    def trip(self, guard: str, measure: int) -> None:
        """A guard gave up on this task: the waiter is released now."""
        self._finish(None, None, (guard, measure))

    def _finish(
        self, value: Any, error: BaseException | None, guard: tuple[str, int] | None
    ) -> None:
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            self.value, self.error, self.guard = value, error, guard
        self._done.release()

    def wait(self, timeout_s: float) -> bool:
        if self._done.acquire(timeout=timeout_s):
            self._done.release()
            return True
        return False


class ElasticExecutor:
    """Threads that grow when all are busy (or stuck in a hung plugin) and
    retire when idle, so an abandoned call never starves the others."""

    def __init__(self, name: str = "plugwarden-inline", idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a task and not yet promised one
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def submit(self, function: Any, *args: Any) -> Task:
        task = Task(function, args)
        with self._lock:
            if self._closed:
                task.trip("closed", 0)
                return task
            spawn = not self._idle
            if spawn:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
                )
                self._threads.add(thread)
            else:
                self._idle -= 1
        if spawn:
            thread.start()
        self._tasks.put(task)
        return task

    def _serve(self) -> None:
        try:
            while True:
                try:
                    task = self._tasks.get(timeout=self._idle_s)
                except queue.Empty:
                    with self._lock:
                        if self._idle:
                            self._idle -= 1
                            return  # retire, taking this thread's idle place with it
                    continue  # a submitter counted on us; its task is on the way
                if task is None:
                    return
                task.run()
                with self._lock:
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self) -> None:
        """Retire every thread; one stuck in a hung plugin is left behind
        (it is a daemon: Python cannot stop it) and ends when the plugin returns."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        for thread in threads:
            thread.join(timeout=1.0)
