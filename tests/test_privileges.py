"""What a worker gives up before its plugin runs (plugwarden.isolation.process.privileges):
each test is a plugin that tries, in its worker, what a hostile one would."""

from __future__ import annotations

import os
import platform

import pytest

from plugwarden import State
from tests.conftest import plugin_source

STATUS = """
fields = {}
with open('/proc/self/status') as status:
    for line in status:
        key, _, value = line.partition(':')
        fields[key] = value.strip()
return {k: fields.get(k) for k in ('NoNewPrivs', 'CapEff', 'CapPrm', 'CapBnd', 'Seccomp')}
"""
# Each call made through libc, as a plugin with ctypes would; the errno of a
# refusal. Each is harmless should it ever get through: a file system type
# that does not exist, Ctrl-Alt-Del turned off.
SYSCALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
attempts = {
    'mount': lambda: libc.mount(b'none', b'/mnt', b'no-such-fs-type', 0, None),
    'unshare': lambda: libc.unshare(0x00020000),
    'ptrace': lambda: libc.ptrace(16, os.getppid(), None, None),
    'setns': lambda: libc.setns(os.open('/proc/self/ns/uts', os.O_RDONLY), 0),
    'reboot': lambda: libc.reboot(0),
}
refused = {}
for name, attempt in attempts.items():
    ctypes.set_errno(0)
    refused[name] = (attempt(), ctypes.get_errno())
return refused
"""
DESCRIPTORS = """
import resource
opened = []
try:
    while len(opened) < 5000:
        opened.append(open('/dev/null'))
    refusal = None
except OSError as exc:
    refusal = exc.errno
finally:
    count = len(opened)
    for file in opened:
        file.close()
return {'opened': count, 'errno': refusal, 'limit': resource.getrlimit(resource.RLIMIT_NOFILE)}
"""
x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the seccomp filter knows x86_64's syscalls only"
)


class TestNoPrivilege:
    @x86_64
    def test_no_new_privileges_no_capabilities_and_a_seccomp_filter(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("status", plugin_source(STATUS))
        status = plugwarden_host().call("status", "t", {}).result
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
        if os.geteuid() == 0:  # root's bounding set is emptied too
            assert int(status["CapBnd"], 16) == 0

    @x86_64
    def test_what_a_plugin_never_needs_answers_eperm_and_the_plugin_serves_on(
        self, plugwarden_plugin, plugwarden_host
    ):
        """mount, unshare, ptrace of its parent, setns, reboot: each -1 with
        EPERM (a refusal libraries can handle, not a kill)."""
        plugwarden_plugin("prober", plugin_source(SYSCALLS))
        host = plugwarden_host()
        refused = host.call("prober", "t", {}).result
        assert refused == {name: [-1, 1] for name in refused}, refused  # errno 1: EPERM
        assert host.status("prober").state is State.INITIALIZED
        assert host.call("prober", "t", {}).ok

    def test_descriptors_run_out_at_the_limit_and_the_plugin_serves_on(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("opener", plugin_source(DESCRIPTORS))
        host = plugwarden_host()
        opened = host.call("opener", "t", {}).result
        assert opened["limit"] == [1024, 1024]
        assert opened["errno"] == 24 and opened["opened"] < 1024  # EMFILE
        assert host.call("opener", "t", {}).ok
