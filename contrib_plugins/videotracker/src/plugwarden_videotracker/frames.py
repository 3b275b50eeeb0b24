"""Frames from a video file or a directory of images, streamed one at a
time (never all in memory), with every way a source can be bad turned into
a :class:`VideoError` that names the root cause and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_PIXELS", "FrameSource", "VideoError", "open_source", "read_image"]

MAX_PIXELS = 4096 * 4096  # a frame past this is refused: downscale first
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(Exception):
    """A per-call error whose message says what is wrong and how to fix it."""


@dataclass
class FrameSource:
    path: str
    total: int | None  # frames in the source, when known
    fps: float | None
    frames: Iterator[tuple[int, Any]]  # (index, RGB uint8 array)


def _checked(frame: Any, path: str) -> Any:
    height, width = frame.shape[:2]
    if width * height > MAX_PIXELS:
        raise VideoError(
            f"{path}: frames of {width}x{height} are over the {MAX_PIXELS // 10**6}-megapixel "
            "limit. Downscale the video first (e.g. ffmpeg -vf scale=1920:-2)."
        )
    return frame


def read_image(path: str) -> Any:
    import cv2

    file = Path(path)
    if not file.is_file():
        raise VideoError(f"Image not found: {path}. Pass a path the plugin's worker can read.")
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError(
            f"Not an image OpenCV can read: {path} (empty, truncated or another format)."
        )
    return _checked(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), path)


def open_source(path: str, stride: int = 1, max_frames: int | None = None) -> FrameSource:
    source = Path(path)
    if not source.exists():
        raise VideoError(f"Video not found: {path}. Pass a path the plugin's worker can read.")
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise VideoError(
                f"No frames in {path}: expected image files ({', '.join(IMAGE_SUFFIXES)})."
            )
        chosen = images[::stride][:max_frames]
        return FrameSource(path, len(chosen), None, _images(chosen))
    if source.stat().st_size == 0:
        raise VideoError(f"Video file is empty: {path}. Copy or record it again.")
    return _video(path, stride, max_frames)


def _images(paths: list[Path]) -> Iterator[tuple[int, Any]]:
    for index, image in enumerate(paths):
        try:
            yield index, read_image(str(image))
        except VideoError as exc:
            raise VideoError(f"Frame {index} ({image.name}) is unreadable: {exc}") from None


def _video(path: str, stride: int, max_frames: int | None) -> FrameSource:
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise VideoError(
            f"Not a video OpenCV can read: {path} (no frames, truncated, damaged or not a video). "
            "Re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4."
        )
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0) or None
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise VideoError(f"The video has no readable frame: {path} (zero frames, or damaged).")
    total = None
    if count > 0:
        total = len(range(0, count, stride))
        total = min(total, max_frames) if max_frames else total
    return FrameSource(path, total, fps, _frames(capture, first, path, count, stride, max_frames))


def _frames(
    capture: Any, first: Any, path: str, count: int, stride: int, max_frames: int | None
) -> Iterator[tuple[int, Any]]:
    import cv2

    try:
        index, frame, yielded = 0, first, 0
        while True:
            if index % stride == 0:
                yield index, _checked(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), path)
                yielded += 1
                if max_frames and yielded >= max_frames:
                    return
            index += 1
            ok, frame = capture.read()
            if not ok or frame is None:
                if count and index < count - 1:
                    raise VideoError(
                        f"Frame {index} of {count} could not be decoded: {path} is truncated or "
                        "damaged there. Re-encode or re-copy it (frames before it were fine)."
                    )
                return
    finally:
        capture.release()
