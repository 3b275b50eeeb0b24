"""Binary values through a worker's shared memory: they round-trip with
their types, dtypes and shapes, and a worker that lies about them is killed
before the host reads a byte outside its segment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from plugwarden import ErrorType, State
from plugwarden.blob import Blob
from plugwarden.isolation.process.segment import MEMFD_NAME
from tests.conftest import ECHO, plugin_source, wait_for

BINARY = plugin_source(
    """
if tool == "echo":
    return args["value"]
if tool == "kinds":
    return {key: [type(v).__name__, str(getattr(v, "dtype", "")), list(getattr(v, "shape", ()))]
            for key, v in args.items()}
if tool == "mean":
    return float(args["frame"].mean())
if tool == "make":
    import numpy as np
    return {"a": np.arange(6, dtype="<f4").reshape(2, 3), "b": [b"xyz", bytearray(b"q")], "n": 3}
if tool == "big":
    return b"x" * args["size"]
"""
)
SMALL = {"server": {"max_blob_bytes": 1 << 20}, "plugins": {"liar": {"max_result_bytes": 1 << 20}}}
DTYPES = ["|u1", "|i1", "<u2", "<i2", "<i4", "<u4", "<i8", "<f2", "<f4", "<f8", "<c8", "|b1"]
SHAPES = [(0,), (7,), (3, 5), (2, 3, 4), (1, 1, 1, 9)]


def segments_held() -> int:
    """The host's mappings of worker segments (one per live worker)."""
    with open("/proc/self/maps") as maps:
        return sum(MEMFD_NAME in line for line in maps)


@pytest.fixture
def binary(plugwarden_plugin, plugwarden_host):
    plugwarden_plugin("binary", BINARY)
    return plugwarden_host()


class TestRoundTrip:
    def test_bytes_bytearray_and_memoryview_arrive_as_themselves(self, binary):
        """Each bytes-like argument is rebuilt in the worker as the type sent."""
        args = {"a": b"\x00\xff" * 3, "b": bytearray(b"yz"), "c": memoryview(b"abcdef")}
        kinds = binary.call("binary", "kinds", args).result
        assert kinds == {
            "a": ["bytes", "", []],
            "b": ["bytearray", "", []],
            "c": ["memoryview", "", [6]],
        }
        assert binary.call("binary", "echo", {"value": args["a"]}).result == args["a"]

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    def test_arrays_keep_dtype_and_shape_both_ways(self, binary, dtype, shape):
        """A numpy array reaches the plugin as one (its env has numpy) and
        comes back as a Blob that numpy reads as the same array."""
        array = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
        kinds = binary.call("binary", "kinds", {"x": array}).result
        assert kinds["x"] == ["ndarray", str(np.dtype(dtype)), list(shape)]
        back = binary.call("binary", "echo", {"value": array}).result
        assert isinstance(back, Blob) and back.shape == shape
        assert np.dtype(back.dtype) == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(back), array)

    def test_a_non_contiguous_array_travels_as_its_contiguous_copy(self, binary):
        array = np.arange(20, dtype="<i4").reshape(4, 5)[:, ::2]
        back = binary.call("binary", "echo", {"value": array}).result
        np.testing.assert_array_equal(np.asarray(back), array)

    def test_binary_values_deep_in_a_result_are_put_back_in_place(self, binary):
        result = binary.call("binary", "make", {}).result
        assert result["n"] == 3 and result["b"] == [b"xyz", b"q"]
        assert result["a"] == Blob(np.arange(6, dtype="<f4").tobytes(), "<f4", (2, 3))

    def test_a_blob_is_sent_as_an_array(self, binary):
        """The host's own Blob (from HTTP, say) reaches a plugin as numpy."""
        blob = Blob(np.arange(4, dtype="<f8").tobytes(), "<f8", (2, 2))
        assert binary.call("binary", "kinds", {"x": blob}).result["x"] == [
            "ndarray", "float64", [2, 2]]  # fmt: skip
        assert binary.call("binary", "mean", {"frame": blob}).result == 1.5

    def test_a_1080p_frame_round_trips_unchanged(self, binary):
        frame = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
        assert binary.call("binary", "mean", {"frame": frame}).result == pytest.approx(frame.mean())
        back = binary.call("binary", "echo", {"value": frame}).result
        assert np.array_equal(np.asarray(back), frame)

    def test_arguments_over_max_blob_bytes_are_refused_before_sending(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("binary", BINARY)
        host = plugwarden_host({"server": {"max_blob_bytes": 1 << 20}})
        result = host.call("binary", "echo", {"value": b"x" * (2 << 20)})
        assert result.error_type == ErrorType.PAYLOAD_TOO_LARGE
        assert "max_blob_bytes" in result.error
        assert host.call("binary", "echo", {"value": b"x" * (1 << 19)}).ok  # worker untouched
        assert host.status("binary").metrics["restarts"] == 0

    def test_a_result_over_max_result_bytes_is_that_calls_error(
        self, plugwarden_plugin, plugwarden_host
    ):
        plugwarden_plugin("binary", BINARY)
        host = plugwarden_host({"plugins": {"binary": {"max_result_bytes": 1 << 20}}})
        result = host.call("binary", "big", {"size": 2 << 20})
        assert result.error_type == ErrorType.RESULT_TOO_LARGE
        assert host.call("binary", "big", {"size": 10}).result == b"x" * 10

    def test_the_host_never_imports_numpy(self, tmp_path):
        """A host passing arrays on (Blob in, Blob out) has no numpy loaded."""
        script = textwrap.dedent(
            f"""
            import json, pathlib, sys
            from plugwarden import Host
            from plugwarden.blob import Blob
            from plugwarden.testing import write_plugin
            write_plugin(pathlib.Path({str(tmp_path)!r}), "binary", {BINARY!r})
            with Host({{"jobs": {{"path": ":memory:"}}}}, search_path=[{str(tmp_path)!r}]) as host:
                host.start()
                back = host.call("binary", "echo", {{"value": Blob(bytes(8), "<f4", (2,))}})
                print(json.dumps([repr(back.result), "numpy" in sys.modules]))
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, check=True)  # fmt: skip
        assert json.loads(done.stdout.splitlines()[-1]) == [
            "Blob(8 bytes, dtype='<f4', shape=(2,))", False]  # fmt: skip


# run() answers its own request with a forged outcome whose blob references
# are {refs}, then waits to be killed.
FORGER = plugin_source(
    """
import gc, json, sys, time
from multiprocessing.connection import Connection
frame = sys._getframe()
while not hasattr(frame.f_locals.get("request"), "id"):
    frame = frame.f_back
request = frame.f_locals["request"].id
conn = next(o for o in gc.get_objects() if isinstance(o, Connection))
head = {"v": 1, "id": request, "pid": os.getpid(), "kind": "outcome", "ok": True,
        "hook": "run", "error": None, "error_type": None, "ms": 0, "blobs": args["refs"]}
conn.send_bytes(json.dumps(head).encode() + b"\\n" + json.dumps(args["result"]).encode())
time.sleep(30)
""",
    prelude="import os",
)
MIB = 1 << 20  # SMALL: the arguments' area is [0, 1 MiB), the result's [1 MiB, 2 MiB)
FORGERIES = {
    "past_the_segment": ([[[], 2 * MIB - 8, 64, "bytes", "|u1", [64]]], None, "past the segment"),
    "huge": ([[[], MIB, 1 << 40, "bytes", "|u1", [1 << 40]]], None, "past the segment"),
    "in_the_arguments": ([[[], 0, 64, "bytes", "|u1", [64]]], None, "arguments' area"),
    "overlapping": (
        [[[0], MIB, 64, "bytes", "|u1", [64]], [[1], MIB + 32, 64, "bytes", "|u1", [64]]],
        [None, None],
        "overlaps another",
    ),
    "object_dtype": ([[[], MIB, 8, "array", "|O8", [1]]], None, "not a plain numeric type"),
    "shape_lies": ([[[], MIB, 8, "array", "<f4", [4]]], None, "is not its 8 bytes"),
    "not_null": ([[["a"], MIB, 8, "bytes", "|u1", [8]]], {"a": "kept"}, "not null"),
    "nowhere": ([[["x", 3], MIB, 8, "bytes", "|u1", [8]]], {"x": [1]}, "leads nowhere"),
    "negative": ([[[], -64, 8, "bytes", "|u1", [8]]], None, "whole number"),
}


class TestForgedReferences:
    @pytest.mark.parametrize("case", sorted(FORGERIES))
    def test_a_forged_reference_kills_the_worker_and_reads_nothing(
        self, plugwarden_plugin, plugwarden_host, case
    ):
        refs, result, why = FORGERIES[case]
        plugwarden_plugin("liar", FORGER)
        plugwarden_plugin("sibling", ECHO)
        host = plugwarden_host({**SMALL, "defaults": {"restart": "never"}})
        answer = host.call("liar", "t", {"refs": refs, "result": result})
        assert answer.error_type == ErrorType.PROTOCOL and answer.guard == "protocol"
        assert "blob reference" in answer.error and why in answer.error
        assert answer.result is None
        assert host.status("liar").state is State.FAILED
        assert host.call("sibling", "t", {"n": 1}).ok


TOUCHER = plugin_source(
    """
import time
total = int(args["a"].sum()) if "a" in args else 0
time.sleep(args.get("hold_s", 0))
return total
"""
)


class TestMemoryGuard:
    def test_a_segment_the_plugin_reads_counts_against_its_memory_limit(
        self, plugwarden_plugin, plugwarden_host
    ):
        """96 MiB of arguments read by a worker limited to 100 MB: killed."""
        plugwarden_plugin("toucher", TOUCHER)
        host = plugwarden_host({"server": {"max_blob_bytes": 128 << 20},
                                "plugins": {"toucher": {"memory_mb": 100}}})  # fmt: skip
        result = host.call("toucher", "t", {"a": np.ones(96 << 20, np.uint8), "hold_s": 5})
        assert result.error_type == ErrorType.MEMORY_LIMIT, result.error

    def test_it_counts_once_between_calls_too(self, plugwarden_plugin, plugwarden_host):
        """Read pages are in the worker's resident set: the zygote's sweep
        does not add the segment's file on top (96 MiB twice would pass 200)."""
        plugwarden_plugin("toucher", TOUCHER)
        host = plugwarden_host({"server": {"max_blob_bytes": 128 << 20},
                                "plugins": {"toucher": {"memory_mb": 200}}})  # fmt: skip
        assert host.call("toucher", "t", {"a": np.ones(96 << 20, np.uint8)}).result == 96 << 20
        pid = host.worker_pids("toucher")
        held = host.call("toucher", "t", {"hold_s": 2})  # ~8 of the zygote's sweeps
        assert held.ok, held.error
        assert host.worker_pids("toucher") == pid


class TestSegmentLifetime:
    def test_each_worker_has_one_segment_and_a_killed_one_leaves_none(
        self, plugwarden_plugin, plugwarden_host
    ):
        """A worker killed while it writes a large result: the host drops
        its mapping, and the replacement has a segment of its own."""
        plugwarden_plugin(
            "dies", plugin_source(
                "import os, signal, threading\n"
                "if tool == 'die':\n"
                "    threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGKILL)).start()\n"
                "    return b'x' * (48 << 20)\n"
                "return 'ok'"
            ),
        )  # fmt: skip
        host = plugwarden_host({"plugins": {"dies": {"workers": 2}}})
        assert segments_held() == 2
        pids = set(host.worker_pids("dies"))
        assert host.call("dies", "die", {}).error_type == ErrorType.WORKER_DIED
        wait_for(lambda: len(set(host.worker_pids("dies")) - pids) == 1, 30)
        assert segments_held() == 2
        assert not any(name.startswith(MEMFD_NAME) for name in os.listdir("/dev/shm"))
        host.close()
        assert segments_held() == 0
