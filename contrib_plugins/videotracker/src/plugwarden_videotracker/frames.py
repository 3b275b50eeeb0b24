"""Frames from a video file or a directory of images, streamed one at a
time (never all in memory), with every way a source can be bad turned into
a :class:`VideoError` that names the root cause and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_PIXELS", "FrameSource", "VideoError", "as_image", "open_source", "read_image"]

MAX_PIXELS = 4096 * 4096  # a frame past this is refused: downscale first
# FFmpeg "plays" text files as video (its tty demuxer renders them as ANSI
# art): codecs no camera or encoder of footage produces.
TEXT_CODECS = frozenset({"ansi", "bint", "xbin", "idf"})
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


def as_image(value: Any, what: str = "args.image") -> Any:
    """An RGB uint8 frame from what a caller sent: a path the worker can
    read, an encoded image's bytes (JPEG, PNG...), or a raw RGB array of
    shape (height, width, 3), as binary values arrive (docs/guides/isolation.md#binary-payloads)."""
    import numpy as np

    if isinstance(value, str) and value:
        return read_image(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return decode_image(value, what)
    if not hasattr(value, "__array_interface__"):
        raise VideoError(
            f"{what} must be an image: a path, encoded image bytes (JPEG, PNG) or a raw RGB "
            "frame (uint8, shape [height, width, 3])."
        )
    frame = np.asarray(value)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(
            f"{what} as a raw frame must be RGB uint8 of shape [height, width, 3]; got "
            f"{frame.dtype} {list(frame.shape)}. Send dtype '|u1' and that shape, or the "
            "encoded image's bytes."
        )
    return _checked(frame, what)


def decode_image(data: bytes | bytearray | memoryview, what: str = "args.image") -> Any:
    """An encoded image's bytes as an RGB uint8 frame."""
    import cv2
    import numpy as np

    encoded = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
    if image is None:
        raise VideoError(
            f"{what}: {encoded.size} bytes that OpenCV cannot decode as an image (JPEG, PNG...). "
            "Send an encoded image's bytes, or a raw frame with dtype '|u1' and shape "
            "[height, width, 3]."
        )
    return _checked(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), what)


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
    codec = _codec(capture.get(cv2.CAP_PROP_FOURCC))
    if not codec or codec in TEXT_CODECS:
        capture.release()
        found = f"FFmpeg reads it as {codec!r}" if codec else "no video codec in it"
        raise VideoError(
            f"Not a video: {path} ({found}: text or arbitrary bytes, not footage). Pass a "
            "video file (MP4, AVI, MKV...) or a directory of images."
        )
    count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
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


def _codec(fourcc: float) -> str:
    """A capture's FOURCC as text ("avc1", "mp4v"; "" for none)."""
    code = int(fourcc) & 0xFFFFFFFF
    return code.to_bytes(4, "little").decode("latin-1").strip("\0 ").lower()


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
