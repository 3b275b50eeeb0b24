"""Detectors and trackers, and the loop that runs them over a frame source.

Detectors: ``mtcnn`` (faces; facenet-pytorch's MTCNN, its weights inside the
wheel) and ``ssdlite`` (objects; torchvision's SSDlite320 MobileNetV3, its
state dict a file the operator provides: ``[plugins.videotracker.models]
ssdlite = PATH``). Trackers: the ``trackers`` package's ByteTrack, SORT and
OC-SORT. Heavy imports happen here, in the worker, never in the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from plugwarden_videotracker.frames import FrameSource, VideoError

__all__ = ["DETECTORS", "TRACKERS", "Detector", "Stream", "make_tracker", "track"]

DETECTORS = ("mtcnn", "ssdlite")
TRACKERS = ("bytetrack", "sort", "ocsort")


class Detector:
    """One detector on one device: ``detect(rgb) -> (boxes Nx4, scores N)``."""

    def __init__(self, kind: str, device: str, weights: str | None = None) -> None:
        import torch

        self.kind = kind
        self.device = device
        self._torch = torch
        if kind == "mtcnn":
            from facenet_pytorch import MTCNN

            self._model: Any = MTCNN(keep_all=True, device=device)
        elif kind == "ssdlite":
            if not weights:
                raise VideoError(
                    "detector 'ssdlite' needs its weights: set [plugins.videotracker.models] "
                    "ssdlite = PATH (a state dict of torchvision's "
                    "ssdlite320_mobilenet_v3_large, e.g. saved from its COCO weights)."
                )
            from torchvision.models.detection import ssdlite320_mobilenet_v3_large

            model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
            try:
                state = torch.load(weights, map_location=device, weights_only=True)
                model.load_state_dict(state)
            except Exception as exc:  # noqa: BLE001 - any bad file is the operator's to fix
                raise VideoError(
                    f"The ssdlite weights {weights} do not load ({type(exc).__name__}: "
                    f"{str(exc)[:200]}). Provide a state dict of ssdlite320_mobilenet_v3_large."
                ) from None
            self._model = model.eval().to(device)
        else:
            raise VideoError(f"Unknown detector {kind!r}: one of {', '.join(DETECTORS)}.")

    def detect(self, frame: Any) -> tuple[Any, Any]:
        import numpy as np

        try:
            if self.kind == "mtcnn":
                boxes, scores = self._model.detect(frame)
                if boxes is None:
                    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
                return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
            with self._torch.inference_mode():
                tensor = self._torch.from_numpy(frame).permute(2, 0, 1).float().div(255)
                output = self._model([tensor.to(self.device)])[0]
            return output["boxes"].cpu().numpy(), output["scores"].cpu().numpy()
        except self._torch.cuda.OutOfMemoryError:
            self._torch.cuda.empty_cache()
            height, width = frame.shape[:2]
            raise VideoError(
                f"CUDA out of memory on a {width}x{height} frame. Downscale the video, or free "
                "the GPU (other processes), or run on device = 'cpu'."
            ) from None


def make_tracker(kind: str, fps: float) -> Any:
    import trackers

    made = {
        "bytetrack": lambda: trackers.ByteTrackTracker(frame_rate=fps),
        "sort": lambda: trackers.SORTTracker(frame_rate=fps),
        "ocsort": lambda: trackers.OCSORTTracker(frame_rate=fps),
    }.get(kind)
    if made is None:
        raise VideoError(f"Unknown tracker {kind!r}: one of {', '.join(TRACKERS)}.")
    return made()


def warm_up(detector: Detector, tracker_kind: str) -> None:
    """One frame of noise through the detector and a tracker: the imports
    (the tracker's stack), thread pools, kernel choices and (on a GPU) the
    CUDA context a first call would otherwise pay for."""
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    Stream(detector, tracker_kind, 0.0, 15.0).update(noise)


class Stream:
    """A tracker fed one frame at a time: :meth:`update` is a frame's
    confirmed tracks. ``track`` runs one over a video; the ``track_frames``
    tool keeps one per stream id."""

    def __init__(self, detector: Detector, tracker_kind: str, confidence: float, fps: float):
        self.detector = detector
        self.tracker_kind = tracker_kind
        self.confidence = confidence
        self.tracker = make_tracker(tracker_kind, fps)
        self.ids: set[int] = set()
        self.frames = 0
        self.used = time.monotonic()

    def update(self, frame: Any) -> list[dict[str, Any]]:
        import numpy as np
        import supervision as sv

        self.used = time.monotonic()
        boxes, scores = self.detector.detect(frame)
        keep = scores >= self.confidence
        detections = sv.Detections(
            xyxy=boxes[keep].reshape(-1, 4).astype(np.float32),
            confidence=scores[keep].astype(np.float32),
            class_id=np.zeros(int(keep.sum()), dtype=int),
        )
        tracked = self.tracker.update(detections)
        tracks = []
        for box, score, track_id in zip(
            tracked.xyxy, tracked.confidence, tracked.tracker_id, strict=True
        ):
            if track_id is None or int(track_id) < 0:
                continue  # not confirmed yet
            self.ids.add(int(track_id))
            tracks.append(
                {
                    "id": int(track_id),
                    "box": [round(float(v), 1) for v in box],
                    "score": round(float(score), 4),
                }
            )
        self.frames += 1
        return tracks


def track(
    source: FrameSource,
    detector: Detector,
    tracker_kind: str,
    confidence: float,
    progress: Callable[[int, int | None], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Detect and track over ``source``; per-frame tracks and a summary."""
    stream = Stream(detector, tracker_kind, confidence, source.fps or 30.0)
    frames: list[dict[str, Any]] = []
    started = time.perf_counter()
    stopped = False
    for done, (index, frame) in enumerate(source.frames):
        if cancelled():
            stopped = True
            break
        frames.append({"index": index, "tracks": stream.update(frame)})
        progress(done + 1, source.total)
    elapsed = time.perf_counter() - started
    return {
        "frames": frames,
        "summary": {
            "frames": len(frames),
            "unique_ids": len(stream.ids),
            "fps": round(len(frames) / elapsed, 2) if elapsed > 0 else None,
            "device": detector.device,
            "detector": detector.kind,
            "tracker": tracker_kind,
            "source_fps": source.fps,
            "cancelled": stopped,
        },
    }
