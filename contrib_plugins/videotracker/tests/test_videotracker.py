"""The VideoTracker plugin, installed, in real workers: UNAVAILABLE without a
GPU, tracking quality on a synthetic video on CPU (through HTTP), every
hardening case, jobs with progress and cancel, conformance."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from plugwarden_videotracker.synthetic import make_video, score

from plugwarden import Host, JobState, State
from plugwarden.environments.project import build_project
from plugwarden.environments.uvtool import Uv
from plugwarden.testing import PluginConformance, wait_for

# What its manifest asks for, granted as an operator does (the defaults are a ceiling).
GRANTS = {"memory_mb": 6144, "timeout_s": 600, "load_timeout_s": 300, "job_timeout_s": 7200}
# The sandbox lets a plugin read only what it is granted: these tests' videos
# and frames live under the temporary directory (no secret of these hosts does).
READ = {"permissions": {"read": [tempfile.gettempdir()]}}
CPU = {"requires_gpu": False, "device": "cpu", **GRANTS, **READ}
TOKEN = "videotracker-test-token-0123"
_DATA = Path(tempfile.mkdtemp(prefix="videotracker-data-"))
VIDEO = _DATA / "two-faces.mp4"
TRUTH = make_video(VIDEO, 45)


def host_with(settings: dict[str, Any] | None = None, **guards: Any) -> Host:
    config = {
        "jobs": {"path": ":memory:"},
        "plugins": {"videotracker": {**CPU, **(settings or {}), **guards}},
    }
    host = Host(config, only={"videotracker"})
    host.start()
    return host


@pytest.fixture(scope="module")
def host():
    made = host_with()
    assert made.status("videotracker").state is State.INITIALIZED, made.status(
        "videotracker"
    ).reason
    yield made
    made.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestWithoutAGpu:
    def test_unavailable_no_gpu_detected_and_the_host_never_imports_torch(self):
        """In a fresh host process (this test process made the video with cv2)."""
        script = (
            "import json, sys\nfrom plugwarden import Host\n"
            "with Host({'jobs': {'path': ':memory:'}}, only={'videotracker'}) as host:\n"
            "    status = host.status('videotracker')\n"
            "    heavy = [m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules]\n"
            "    print(json.dumps([status.state.value, status.reason, heavy]))\n"
        )
        env = {**os.environ, "PLUGWARDEN_FAKE_GPU": "none"}  # as on a machine without one
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env,
            timeout=120, check=True,
        )  # fmt: skip
        state, reason, heavy = json.loads(done.stdout.strip().splitlines()[-1])
        assert state == "UNAVAILABLE" and reason.startswith("No GPU detected"), reason
        assert heavy == []

    def test_on_cpu_by_the_operators_choice_it_says_so_in_its_health(self, host):
        report = host.check_health("videotracker")
        assert report["ok"] and report["report"]["device"] == "cpu"

    def test_its_first_call_finds_the_model_and_tracker_already_run(self, host):
        """validate() runs a frame through the default detector and tracker,
        so a first call does not pay for imports, thread pools and kernel
        choices (a first track after serve once took 7x the next one)."""
        warmed = host.check_health("videotracker")["report"]["warmed_up"]
        assert (warmed["detector"], warmed["tracker"]) == ("mtcnn", "bytetrack")
        assert warmed["seconds"] > 0


class TestTrackingQuality:
    def test_each_object_keeps_one_id_and_boxes_match_the_truth(self, host):
        result = host.call("videotracker", "track", {"video": str(VIDEO)})
        assert result.ok, result.error
        quality = score(result.result, TRUTH)
        assert quality["id_switches"] == 0
        assert all(len(ids) == 1 for ids in quality["ids"].values()), quality
        assert quality["matched"] >= 0.9, quality
        summary = result.result["summary"]
        assert (summary["frames"], summary["unique_ids"], summary["device"]) == (45, 2, "cpu")

    def test_through_http_on_a_real_server(self, tmp_path):
        """plugwarden serve, as an operator runs it: CPU by config, a track call over HTTP."""
        config = tmp_path / "plugwarden.toml"
        config.write_text(
            f'[server]\ntoken = "{TOKEN}"\n[jobs]\npath = ":memory:"\n'
            '[plugins.videotracker]\nrequires_gpu = false\ndevice = "cpu"\n'
            + "".join(f"{key} = {value}\n" for key, value in GRANTS.items())
            + f'permissions = {{ read = ["{_DATA}"] }}\n'  # its videos, not this config
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "plugwarden", "serve", "--port", str(port),
             "--config", str(config)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, 180, "the server to be ready")
            record = httpx.get(f"{url}/v1/plugins/videotracker").json()
            assert record["state"] == "INITIALIZED", record["reason"]
            answer = httpx.post(
                f"{url}/v1/plugins/videotracker/run",
                json={"tool": "track", "args": {"video": str(VIDEO)}},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=300,
            ).json()
            assert answer["ok"], answer["error"]
            quality = score(answer["result"], TRUTH)
            assert quality["id_switches"] == 0 and quality["matched"] >= 0.9, quality
            maps = Path(f"/proc/{server.pid}/maps").read_text()
            assert "libtorch" not in maps and "cv2" not in maps  # only the worker loads them
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            server.stderr.close()

    def test_options_stride_max_frames_and_trackers(self, host):
        for tracker in ("bytetrack", "sort", "ocsort"):
            result = host.call(
                "videotracker", "track",
                {"video": str(VIDEO), "stride": 2, "max_frames": 10, "tracker": tracker},
            )  # fmt: skip
            assert result.ok, result.error
            assert [f["index"] for f in result.result["frames"]] == list(range(0, 20, 2))

    def test_a_directory_of_frames_and_detect_on_one_image(self, host, tmp_path):
        import cv2

        capture = cv2.VideoCapture(str(VIDEO))
        for index in range(6):
            ok, frame = capture.read()
            assert ok
            cv2.imwrite(str(tmp_path / f"{index:04d}.png"), frame)
        capture.release()
        result = host.call("videotracker", "track", {"video": str(tmp_path)})
        assert result.ok and result.result["summary"]["frames"] == 6
        boxes = host.call("videotracker", "detect", {"image": str(tmp_path / "0003.png")})
        assert boxes.ok and len(boxes.result["boxes"]) == 2


def video_frames(count: int | None = None) -> list[Any]:
    """The synthetic video's frames, decoded here as RGB arrays."""
    import cv2

    capture = cv2.VideoCapture(str(VIDEO))
    frames = []
    while count is None or len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


class TestFrames:
    """Images and live streams sent as binary values, not paths."""

    def test_detect_takes_encoded_bytes_and_raw_arrays_alike(self, host, tmp_path):
        import cv2

        frame = video_frames(4)[3]
        path = tmp_path / "frame.png"
        cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        by_path = host.call("videotracker", "detect", {"image": str(path)})
        by_bytes = host.call("videotracker", "detect", {"image": path.read_bytes()})
        by_array = host.call("videotracker", "detect", {"image": frame})
        assert by_path.ok and len(by_path.result["boxes"]) == 2, by_path.error
        assert by_bytes.result == by_path.result == by_array.result

    def test_track_frames_gives_what_track_gives_on_the_same_video(self, host):
        """Fed one frame per call, a stream gets the same ids and boxes as
        the whole video tracked in one call."""
        whole = host.call("videotracker", "track", {"video": str(VIDEO)}).result
        frames = video_frames()
        streamed = []
        for index, frame in enumerate(frames):
            args = {"stream": "cam-1", "frame": frame, "fps": 15.0, "end": index == len(frames) - 1}
            answer = host.call("videotracker", "track_frames", args)
            assert answer.ok, answer.error
            assert answer.result["index"] == index
            streamed.append({"index": index, "tracks": answer.result["tracks"]})
        assert streamed == whole["frames"]
        quality = score({"frames": streamed}, TRUTH)
        assert quality["id_switches"] == 0 and quality["matched"] >= 0.9, quality
        assert host.check_health("videotracker")["report"]["streams"] == 0  # ended

    def test_interleaved_streams_keep_their_own_ids(self, host):
        frames = video_frames(12)
        alone = [host.call("videotracker", "track_frames", {"stream": "solo", "frame": f}).result
                 for f in frames]  # fmt: skip
        mixed: dict[str, list[Any]] = {"x": [], "y": []}
        for frame in frames:
            for name in ("x", "y"):
                answer = host.call("videotracker", "track_frames", {"stream": name, "frame": frame})
                mixed[name].append(answer.result["tracks"])
        expected = [result["tracks"] for result in alone]
        assert mixed["x"] == expected and mixed["y"] == expected

    @pytest.mark.parametrize(
        ("frame", "message"),
        [
            (b"\x00\x01 not an image", "OpenCV cannot decode as an image"),
            (b"", "0 bytes that OpenCV cannot decode"),
            ("zeros(8, 8)", "raw frame must be RGB uint8 of shape [height, width, 3]"),
            ("zeros(8, 8, 3)f4", "got float32 [8, 8, 3]"),
            (None, "args.frame must be an image"),
        ],
    )
    def test_a_bad_frame_is_a_clear_per_call_error(self, host, frame, message):
        import numpy as np

        if isinstance(frame, str):
            shape = tuple(int(n) for n in frame[6:].split(")")[0].split(","))
            frame = np.zeros(shape, np.float32 if frame.endswith("f4") else np.uint8)
        answer = host.call("videotracker", "track_frames", {"stream": "bad", "frame": frame})
        assert not answer.ok and message in answer.error, answer.error
        assert answer.guard is None and host.status("videotracker").available


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Bad sources, one per hardening case."""
    return _bad_sources(tmp_path_factory.mktemp("bad"))


def _bad_sources(root: Path) -> Path:
    import cv2
    import numpy as np

    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video at all\n" * 100)
    (root / "notes.txt").write_text("FFmpeg renders this as ANSI art\n" * 2000)
    (root / "noise.bin").write_bytes(np.random.default_rng(7).bytes(200_000))
    data = VIDEO.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    writer = cv2.VideoWriter(str(root / "zero.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 64))
    writer.release()
    frames = root / "frames"
    frames.mkdir()
    good = np.zeros((120, 160, 3), np.uint8)
    for index in range(4):
        cv2.imwrite(str(frames / f"{index:03d}.png"), good)
    (frames / "002.png").write_bytes(b"\x89PNG garbage")
    huge = root / "huge"
    huge.mkdir()
    cv2.imwrite(str(huge / "000.png"), np.zeros((4200, 4200, 3), np.uint8))
    return root


class TestHardening:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ({"video": "/no/such/video.mp4"}, "Video not found: /no/such/video.mp4"),
            ({"video": "{root}/empty.mp4"}, "Video file is empty"),
            ({"video": "{root}/text.mp4"}, "Not a video OpenCV can read"),
            ({"video": "{root}/notes.txt"}, "FFmpeg reads it as 'ansi'"),
            ({"video": "{root}/noise.bin"}, "no video codec in it"),
            ({"video": "{root}/truncated.mp4"}, "truncated"),
            ({"video": "{root}/zero.mp4"}, "no frames"),
            ({"video": "{root}/frames"}, "Frame 2 (002.png) is unreadable"),
            ({"video": "{root}/huge"}, "megapixel limit. Downscale"),
            ({"video": str(VIDEO), "stride": 0}, "must be whole numbers >= 1"),
            ({"video": str(VIDEO), "tracker": "magic"}, "Unknown tracker 'magic'"),
            ({"video": str(VIDEO), "detector": "ssdlite"}, "needs its weights"),
            ({}, "args.video is required"),
        ],
    )
    def test_a_bad_input_is_a_clear_per_call_error_and_the_plugin_serves_on(
        self, host, bad, args, message
    ):
        args = {k: v.format(root=bad) if isinstance(v, str) else v for k, v in args.items()}
        result = host.call("videotracker", "track", args)
        assert not result.ok and message in result.error, result.error
        assert result.guard is None and host.status("videotracker").available
        assert host.call("videotracker", "track", {"video": str(VIDEO), "max_frames": 2}).ok

    def test_the_memory_guard_holds_on_a_long_video(self, tmp_path):
        """Frames are streamed: 300 frames in a worker capped at 2 GB."""
        long_video = tmp_path / "long.mp4"
        make_video(long_video, 300)
        host = host_with(memory_mb=2048)
        try:
            result = host.call("videotracker", "track", {"video": str(long_video), "stride": 3})
            assert result.ok, result.error
            assert result.result["summary"]["frames"] == 100
            assert host.status("videotracker").metrics["guard_trips"]["memory"] == 0
        finally:
            host.close()


class TestJobs:
    def test_a_long_video_as_a_job_reports_frames_done_and_stops_when_cancelled(
        self, host, tmp_path
    ):
        long_video = tmp_path / "long.mp4"
        make_video(long_video, 600)
        job = host.submit("videotracker", "track", {"video": str(long_video)})
        wait_for(lambda: (host.job(job.id).progress or None) is not None, 120, "progress")
        progress = host.job(job.id).progress
        assert progress.total == 600 and 1 <= progress.done < 600
        host.cancel(job.id)
        wait_for(lambda: host.job(job.id).finished, 30, "the cancel")
        done = host.job(job.id)
        assert done.state == JobState.CANCELLED
        assert done.record.ok and done.record.result["summary"]["cancelled"]
        assert done.record.result["summary"]["frames"] < 600

    def test_a_job_to_completion(self, host):
        job = host.submit("videotracker", "track", {"video": str(VIDEO), "max_frames": 10})
        wait_for(lambda: host.job(job.id).finished, 120, "the job")
        finished = host.job(job.id)
        assert finished.state == JobState.SUCCEEDED
        assert finished.progress.done == finished.progress.total == 10


class TestSsdlite:
    def test_a_random_state_dict_loads_and_runs(self, tmp_path):
        import torch
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        weights = tmp_path / "ssdlite.pth"
        torch.save(
            ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict(), weights
        )
        host = host_with({"models": {"ssdlite": str(weights)}})
        try:
            result = host.call(
                "videotracker", "track",
                {"video": str(VIDEO), "detector": "ssdlite", "max_frames": 3, "confidence": 0.0},
            )  # fmt: skip
            assert result.ok, result.error  # loading is what is tested, not the untrained boxes
            assert result.result["summary"]["detector"] == "ssdlite"
        finally:
            host.close()

    def test_a_missing_weights_file_is_unavailable_naming_the_path(self, tmp_path):
        missing = tmp_path / "nowhere" / "ssdlite.pth"
        host = host_with({"models": {"ssdlite": str(missing)}})
        try:
            status = host.status("videotracker")
            assert status.state is State.UNAVAILABLE
            assert status.reason == f"Model file not found: {missing}"
        finally:
            host.close()


class TestVideoTrackerConforms(PluginConformance):
    plugin = "videotracker"
    tool_examples: ClassVar[dict[str, dict[str, Any]]] = {
        "track": {"video": str(VIDEO), "max_frames": 3},
        "detect": {"image": str(VIDEO)},  # replaced below by a real image
    }
    host_config: ClassVar[dict[str, Any]] = {"plugins": {"videotracker": CPU}}
    conformance_level = "2"


def _first_frame_png() -> str:
    import cv2

    capture = cv2.VideoCapture(str(VIDEO))
    ok, frame = capture.read()
    capture.release()
    path = _DATA / "frame0.png"
    if ok:
        cv2.imwrite(str(path), frame)
    return str(path)


TestVideoTrackerConforms.tool_examples["detect"] = {"image": _first_frame_png()}
TestVideoTrackerConforms.tool_examples["track_frames"] = {
    "stream": "conformance", "frame": _first_frame_png(), "end": True}  # fmt: skip


@pytest.mark.gpu
def test_cuda_gives_the_cpu_result(host):
    """On a GPU machine: the same pipeline on CUDA tracks as on CPU."""
    cuda = host_with({"device": "cuda"})
    try:
        on_gpu = cuda.call("videotracker", "track", {"video": str(VIDEO)})
        on_cpu = host.call("videotracker", "track", {"video": str(VIDEO)})
        assert on_gpu.ok and on_gpu.result["summary"]["device"] == "cuda", on_gpu.error
        gpu_quality, cpu_quality = score(on_gpu.result, TRUTH), score(on_cpu.result, TRUTH)
        assert gpu_quality["id_switches"] == cpu_quality["id_switches"] == 0
        assert abs(gpu_quality["matched"] - cpu_quality["matched"]) <= 0.05
        print(json.dumps({"cuda": on_gpu.result["summary"], "cpu": on_cpu.result["summary"]}))
    finally:
        cuda.close()


@pytest.mark.gpu
def test_cuda_out_of_memory_is_a_per_call_error_and_the_plugin_serves_on(tmp_path):
    """A worker allowed a sliver of GPU memory runs out on a big frame."""
    import cv2
    import numpy as np

    frames = tmp_path / "big"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((4000, 4000, 3), 128, np.uint8))
    cuda = host_with({"device": "cuda", "requires_gpu": True, "cuda_memory_fraction": 0.001})
    try:
        result = cuda.call("videotracker", "track", {"video": str(frames)})
        assert not result.ok and "CUDA out of memory" in result.error, result.error
        assert cuda.status("videotracker").available
    finally:
        cuda.close()


PROJECT = Path(__file__).resolve().parents[1]


class TestOwnEnvironment:
    def test_plugwarden_install_gives_it_an_environment_of_its_own(self, host, tmp_path):
        """``plugwarden install`` of this project: its [ml] stack and
        facenet-pytorch (old pins overridden) in an environment of its own,
        found by a host whose own environment is not searched; it tracks as
        the pip-installed copy does."""
        config = {
            "jobs": {"path": ":memory:"},
            "server": {"plugins_dir": str(tmp_path / "plugins")},
            "plugins": {"videotracker": {**CPU, "preload": True}},
        }
        own = Host(config, search_path=[])
        own.start()
        try:
            # As `plugwarden install DIR` does: built here, installed by the host.
            built = build_project(str(PROJECT), tmp_path / "wheel", Uv(), lambda *_: None)
            job = own.install(built.specs, built.overrides)
            wait_for(lambda: own.job(job.id).finished, 1800)
            done = own.job(job.id)
            assert done.state == JobState.SUCCEEDED, done.outcome
            environment = own.status("videotracker").to_dict()["environment"]
            packages = environment["packages"]
            assert packages["facenet-pytorch"] == "2.6.0"
            assert packages["torch"].startswith("2.14.1")
            assert environment["path"].startswith(str(tmp_path))
            theirs = own.call("videotracker", "track", {"video": str(VIDEO)})
            ours = host.call("videotracker", "track", {"video": str(VIDEO)})
            assert theirs.ok, theirs.error
            keys = ("frames", "unique_ids", "device", "detector")
            assert [theirs.result["summary"][k] for k in keys] == [
                ours.result["summary"][k] for k in keys
            ]
            assert score(theirs.result, TRUTH)["id_switches"] == 0
        finally:
            own.close()
