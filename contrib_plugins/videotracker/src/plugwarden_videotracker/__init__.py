"""plugwarden-videotracker: a detector plus a multi-object tracker over video.

The hooks run in a plugwarden worker process; torch and friends are imported
there only (never in the host). Settings ([plugins.videotracker]): ``device``
("cuda", the default, or "cpu" together with ``requires_gpu = false``),
``detector`` ("mtcnn" or "ssdlite"), ``tracker``, ``confidence``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

# Before torch loads: its OpenMP threads sleep between parallel regions
# instead of spinning. Spinning starves the server of a CPU when another is
# busy (0.8 frames/s over HTTP beside one busy CPU, against 8.4 passive), at
# the price of ~1/3 of the frames a second on an idle machine: an operator
# with CPUs to spare sets env = { OMP_WAIT_POLICY = "ACTIVE" } (the env
# table wins; with preload, torch loads in the zygote, before this line).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import plugwarden
from plugwarden import hookimpl
from plugwarden_videotracker.frames import VideoError, as_image, open_source
from plugwarden_videotracker.pipeline import (
    DETECTORS,
    TRACKERS,
    Detector,
    Stream,
    track,
    warm_up,
)

_state: dict[str, Any] = {"frames": 0, "calls": 0}
_detectors: dict[str, Detector] = {}
# track_frames: one tracker per stream id, in this worker (README, "Live
# streams"): at most MAX_STREAMS, the least recently fed one dropped first,
# any left unfed for STREAM_IDLE_S dropped.
_streams: dict[str, Stream] = {}
MAX_STREAMS = 64
STREAM_IDLE_S = 600.0


@hookimpl
def init(config: dict[str, Any]) -> None:
    _state["device"] = str(config.get("device", "cuda"))
    _state["detector"] = str(config.get("detector", "mtcnn"))
    _state["tracker"] = str(config.get("tracker", "bytetrack"))
    _state["confidence"] = float(config.get("confidence", 0.9))
    _state["models"] = dict(config.get("models") or {})
    # A cap on this worker's share of GPU memory (0-1], for a GPU shared with others.
    _state["cuda_memory_fraction"] = config.get("cuda_memory_fraction")


@hookimpl
def validate() -> bool | str:
    import torch

    device = _state["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            "device is 'cuda' but torch sees no CUDA GPU in the worker. Run on a GPU machine, "
            "or set [plugins.videotracker] device = 'cpu' and requires_gpu = false."
        )
    if _state["detector"] not in DETECTORS or _state["tracker"] not in TRACKERS:
        return f"detector must be one of {DETECTORS} and tracker one of {TRACKERS}"
    # The default model loaded and run once now, with the default tracker:
    # the first call is then as fast as the next.
    started = time.monotonic()
    warm_up(_detector(_state["detector"]), _state["tracker"])
    _state["warmed_up"] = {
        "detector": _state["detector"],
        "tracker": _state["tracker"],
        "seconds": round(time.monotonic() - started, 3),
    }
    return True


def _detector(kind: str) -> Detector:
    if kind not in _detectors:
        _detectors[kind] = Detector(kind, _state["device"], _state["models"].get(kind))
    return _detectors[kind]


def _option(args: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = args.get(key, default)
    if value is None or (kind is int and isinstance(value, int) and not isinstance(value, bool)):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and number and math.isfinite(value):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise VideoError(f"args.{key} must be {kind.__name__}, got {value!r}")


@hookimpl
def run(tool: str, args: dict[str, Any]) -> Any:
    _state["calls"] += 1
    try:
        if tool == "track":
            return _track(args)
        if tool == "track_frames":
            return _track_frame(args)
        if tool == "detect":
            detector = _detector(_option(args, "detector", str, _state["detector"]))
            boxes, scores = detector.detect(as_image(args.get("image")))
            confidence = _option(args, "confidence", float, _state["confidence"])
            return {
                "boxes": [
                    {"box": [round(float(v), 1) for v in box], "score": round(float(s), 4)}
                    for box, s in zip(boxes, scores, strict=True)
                    if s >= confidence
                ],
                "device": detector.device,
            }
    except VideoError as exc:
        raise ValueError(str(exc)) from None
    raise ValueError(f"Unknown tool {tool!r}: videotracker has track, track_frames and detect")


def _track_frame(args: dict[str, Any]) -> dict[str, Any]:
    """One frame of a live stream: its tracks, with ids kept across the
    stream's frames (its first frame sets its detector, tracker, confidence
    and fps; ``end`` drops it after this frame)."""
    name = _option(args, "stream", str, None)
    if not name:
        raise VideoError("args.stream is required: any id naming the stream this frame is of")
    frame = as_image(args.get("frame"), "args.frame")
    stream = _streams.pop(name, None)
    if stream is None:
        now = time.monotonic()
        for idle in [key for key, kept in _streams.items() if now - kept.used > STREAM_IDLE_S]:
            del _streams[idle]
        while len(_streams) >= MAX_STREAMS:
            del _streams[next(iter(_streams))]  # the least recently fed
        stream = Stream(
            _detector(_option(args, "detector", str, _state["detector"])),
            _option(args, "tracker", str, _state["tracker"]),
            _option(args, "confidence", float, _state["confidence"]),
            _option(args, "fps", float, 30.0),
        )
    tracks = stream.update(frame)
    if not args.get("end"):
        _streams[name] = stream  # last: the most recently fed
    _state["frames"] += 1
    return {"stream": name, "index": stream.frames - 1, "tracks": tracks,
            "unique_ids": len(stream.ids)}  # fmt: skip


def _track(args: dict[str, Any]) -> dict[str, Any]:
    video = _option(args, "video", str, None)
    if not video:
        raise VideoError("args.video is required: a video file or a directory of frames")
    stride = _option(args, "stride", int, 1)
    max_frames = _option(args, "max_frames", int, None)
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise VideoError("args.stride and args.max_frames must be whole numbers >= 1")
    source = open_source(video, stride, max_frames)
    detector = _detector(_option(args, "detector", str, _state["detector"]))
    fraction = _state["cuda_memory_fraction"]
    if fraction is not None and detector.device.startswith("cuda"):
        import torch

        torch.cuda.set_per_process_memory_fraction(float(fraction))
    result = track(
        source,
        detector,
        _option(args, "tracker", str, _state["tracker"]),
        _option(args, "confidence", float, _state["confidence"]),
        lambda done, total: plugwarden.progress(done, total, f"frame {done}"),
        plugwarden.cancelled,
    )
    _state["frames"] += result["summary"]["frames"]
    return result


@hookimpl
def health() -> dict[str, Any]:
    return {
        "device": _state.get("device"),
        "detectors_loaded": sorted(_detectors),
        "warmed_up": _state.get("warmed_up"),
        "frames_processed": _state["frames"],
        "streams": len(_streams),
        "calls": _state["calls"],
    }
