"""Which process an Xid hit (plugwarden.isolation.xidlog): the driver's
lines in the kernel log, parsed as it writes them, read as they come, and
matched to NVML's events, which name no process."""

from __future__ import annotations

import pytest

from plugwarden.isolation.nvml import XidEvent, pci_bus
from plugwarden.isolation.xidlog import (
    ATTRIBUTION_S,
    LINES_KEPT,
    WAITING_MAX,
    LoggedXid,
    XidAttribution,
    XidLog,
    parse,
)

# As drivers of several generations write them.
WITH_PID = (
    "4,1287,3512123456,-;NVRM: Xid (PCI:0000:3b:00): 31, pid=20817, name=python3, "
    "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted"
)
UNKNOWN = (
    "3,1301,3512987654,-;NVRM: Xid (PCI:0000:3B:00): 79, pid='<unknown>', name=<unknown>, "
    "GPU has fallen off the bus."
)
OLD = "4,77,1200,c;NVRM: Xid (PCI:0000:00:1e): 13, Graphics SM Warp Exception on (GPC 0, TPC 0)"


class TestParse:
    def test_a_line_naming_a_process_gives_its_pid_gpu_and_xid(self):
        assert parse(WITH_PID) == LoggedXid("0000:3b:00", 31, 20817)

    def test_a_line_that_cannot_tell_the_process_gives_none(self):
        assert parse(UNKNOWN) == LoggedXid("0000:3b:00", 79, None)
        assert parse(OLD) == LoggedXid("0000:00:1e", 13, None)

    def test_other_kernel_lines_are_not_xids(self):
        assert parse("6,1,2,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module 550.54") is None
        assert parse("4,2,3,-;nvidia-modeset: NVRM: Xid (PCI:0000:3b:00): 31, pid=1") is None
        assert parse(" DEVICE=+pci:0000:3b:00.0") is None  # a record's continuation line

    def test_a_line_written_from_user_space_is_not_the_drivers(self):
        """The kernel gives what a process writes to /dev/kmsg a facility
        of its own (here LOG_USER, 8 + level): it cannot frame a worker."""
        assert parse(WITH_PID.replace("4,1287,", "12,1287,", 1)) is None
        assert parse(WITH_PID.split(";", 1)[1]) is None  # no record at all

    def test_nvml_and_the_kernel_name_a_gpu_alike(self):
        assert pci_bus("00000000:3B:00.0") == pci_bus("0000:3b:00") == "0000:3b:00"
        assert pci_bus("not an address") == ""


class TestXidLog:
    def test_only_lines_written_after_it_opened_are_read(self, tmp_path):
        path = tmp_path / "kmsg"
        path.write_text(f"{WITH_PID}\n")
        log = XidLog(str(path))
        assert log.read() == []
        with path.open("a") as file:
            file.write(f"6,1288,1,-;usb 1-1: new device\n{UNKNOWN}\n")
        assert log.read() == [LoggedXid("0000:3b:00", 79, None)]
        assert log.read() == []

    def test_a_line_written_in_two_pieces_is_read_once_whole(self, tmp_path):
        path = tmp_path / "kmsg"
        path.touch()
        log = XidLog(str(path))
        with path.open("a") as file:
            file.write(WITH_PID[:40])
            file.flush()
            assert log.read() == []
            file.write(WITH_PID[40:] + "\n")
        assert log.read() == [LoggedXid("0000:3b:00", 31, 20817)]

    def test_a_log_that_cannot_be_opened_says_why_and_reads_nothing(self, tmp_path):
        log = XidLog(str(tmp_path / "absent"))
        assert "absent: No such file or directory" in log.problem
        assert log.read() == []

    def test_the_real_kernel_log_is_read_without_waiting_where_it_may_be(self):
        log = XidLog("/dev/kmsg")
        if log.problem:  # no CAP_SYSLOG where kernel.dmesg_restrict is set, or no such file
            assert log.problem.startswith("/dev/kmsg: ")
        else:
            assert all(isinstance(line, LoggedXid) for line in log.read())  # returns: no block
        log.close()


BUSES = {0: "0000:3b:00", 1: "0000:86:00"}


class TestAttribution:
    @pytest.fixture
    def kmsg(self, tmp_path):
        path = tmp_path / "kmsg"
        path.touch()
        return path

    def test_an_event_takes_the_process_of_its_gpus_line(self, kmsg):
        attribution = XidAttribution(str(kmsg))
        kmsg.write_text(f"{WITH_PID.replace('3b:00', '86:00')}\n{WITH_PID}\n")
        found = attribution.resolve([XidEvent(0, 31)], BUSES, now=0.0)
        assert found == [XidEvent(0, 31, 20817)]
        assert attribution.state.startswith("per process")

    def test_an_event_waits_for_its_line_then_goes_without_it(self, kmsg):
        attribution = XidAttribution(str(kmsg))
        assert attribution.resolve([XidEvent(0, 31), XidEvent(1, 43)], BUSES, now=0.0) == []
        kmsg.write_text(f"{WITH_PID}\n")
        assert attribution.resolve([], BUSES, now=0.1) == [XidEvent(0, 31, 20817)]
        assert attribution.resolve([], BUSES, now=ATTRIBUTION_S) == [XidEvent(1, 43)]

    def test_without_a_readable_log_every_event_goes_at_once_naming_no_process(self, tmp_path):
        attribution = XidAttribution(str(tmp_path / "absent"))
        assert attribution.resolve([XidEvent(0, 31)], BUSES, now=0.0) == [XidEvent(0, 31)]
        assert attribution.state.startswith("per GPU: the driver's Xid lines cannot be read")

    def test_a_reader_that_knows_its_pids_are_not_the_hosts_reads_no_log(self, kmsg):
        attribution = XidAttribution(None, "this host runs in a PID namespace of its own")
        kmsg.write_text(f"{WITH_PID}\n")
        assert attribution.resolve([XidEvent(0, 31)], BUSES, now=0.0) == [XidEvent(0, 31)]
        assert attribution.state == "per GPU: this host runs in a PID namespace of its own"

    def test_an_xid_storm_keeps_its_bookkeeping_bounded(self, kmsg):
        """A GPU can report thousands of Xids a second: only the newest lines
        are kept, and events past what may wait go at once, GPU-wide."""
        attribution = XidAttribution(str(kmsg))
        other = WITH_PID.replace("3b:00", "86:00")
        kmsg.write_text(f"{other}\n" * (LINES_KEPT * 3) + f"{WITH_PID}\n")
        storm = [XidEvent(1, 43)] * (WAITING_MAX * 4)  # no line of theirs comes
        ready = attribution.resolve([XidEvent(0, 31), *storm], BUSES, now=0.0)
        assert ready[0] == XidEvent(0, 31, 20817)  # its line was among the newest kept
        assert len(ready) == 1 + WAITING_MAX * 3  # the rest of the storm waits, bounded
        assert len(attribution.resolve([], BUSES, now=ATTRIBUTION_S)) == WAITING_MAX
