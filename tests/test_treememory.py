"""TreeMemory: a process tree's resident memory from kept-open /proc files."""

from __future__ import annotations

import os
import subprocess
import sys

from plugwarden.isolation.process.treememory import KEPT, TreeMemory
from tests.conftest import wait_for

HOG = "import sys\nblock = bytearray(64 * 2**20)\nprint('ready', flush=True)\nsys.stdin.read()"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class TestTreeMemory:
    def test_a_childs_memory_counts_until_it_exits(self):
        """A child that allocates is counted once the tree is re-read, and no
        longer once it has exited (its descriptor is dropped)."""
        memory = TreeMemory(os.getpid(), refresh_s=0.0)
        alone = memory.read()
        child = subprocess.Popen(
            [sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            assert memory.read() >= alone + 60 * 2**20
        finally:
            child.communicate("")
        wait_for(lambda: memory.read() < alone + 60 * 2**20, timeout_s=30)
        memory.close()

    def test_close_releases_every_descriptor_and_reads_nothing_after(self):
        before = open_fds()
        memory = TreeMemory(os.getpid())
        assert memory.read() > 0
        assert open_fds() > before
        memory.close()
        assert open_fds() == before
        assert memory.read() == 0

    def test_a_process_that_is_gone_reads_zero(self):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        memory = TreeMemory(child.pid)
        assert memory.read() == 0
        memory.close()

    def test_a_wide_tree_is_read_whole_holding_few_descriptors(self):
        """A plugin's 500 children held 500 of the host's descriptors (one
        statm file each, open after the call). Past KEPT they are opened at
        each reading; each child still counts."""
        children = [
            subprocess.Popen(
                [sys.executable, "-c", HOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(KEPT + 6)
        ]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline() == "ready\n"
            before = open_fds()
            memory = TreeMemory(os.getpid(), refresh_s=0.0)
            total = memory.read()
            assert total >= len(children) * 60 * 2**20
            assert open_fds() - before <= KEPT
            memory.close()
        finally:
            for child in children:
                child.communicate("")

    def test_shared_memory_files_count_once_each_and_one_can_be_skipped(self):
        """Written memfds count by their pages; the one named by its inode
        (a worker's own segment, counted through its resident set) does not."""
        memory = TreeMemory(os.getpid(), include_root=True, refresh_s=0.0)
        memory.read()
        before = memory.shared_bytes()
        first, second = os.memfd_create("one"), os.memfd_create("two")
        try:
            for fd in (first, second):
                os.write(fd, b"x" * 2**20)
            assert memory.shared_bytes() - before == 2 * 2**20
            found = os.fstat(second)
            skipped = memory.shared_bytes(skip=(found.st_dev, found.st_ino))
            assert skipped - before == 2**20
        finally:
            os.close(first)
            os.close(second)
            memory.close()
