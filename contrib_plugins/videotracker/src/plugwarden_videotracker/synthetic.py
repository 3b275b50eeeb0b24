"""A short test video with known ground truth, made here (nothing to download).

Two faces (from scikit-image's bundled astronaut image, one mirrored) move on
crossing paths over a brick texture. ``make_video(path)`` writes the video
(mp4) and returns the ground truth: per frame, each object's face box. The
face box inside a sprite was set by hand once from the astronaut image.

``python -m plugwarden_videotracker.synthetic OUT.mp4 [FRAMES]`` does the same
and writes OUT.json beside the video.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["make_video"]

WIDTH, HEIGHT, FPS = 640, 360, 15
SPRITE_W, SPRITE_H = 88, 100
# The face (forehead to chin) inside the sprite, as fractions of its size.
FACE = (0.15, 0.28, 0.76, 0.96)


def _sprite() -> Any:
    import numpy as np
    import skimage.data
    from skimage.transform import resize

    face = skimage.data.astronaut()[20:180, 160:300]
    return resize(face, (SPRITE_H, SPRITE_W), preserve_range=True, anti_aliasing=True).astype(
        np.uint8
    )


def _paths(frames: int) -> list[list[tuple[int, int]]]:
    """Sprite top-left corners: A left to right going down, B right to left
    going up; their x paths cross mid-video, their boxes do not overlap."""
    span = max(1, frames - 1)
    a = [(int(30 + 480 * t / span), int(20 + 40 * t / span)) for t in range(frames)]
    b = [(int(510 - 480 * t / span), int(230 - 40 * t / span)) for t in range(frames)]
    return [a, b]


def make_video(path: str | Path, frames: int = 45) -> list[list[dict[str, Any]]]:
    """Write the video; the ground truth per frame: [{"object", "box"}]."""
    import cv2
    import numpy as np
    import skimage.data
    from skimage.transform import resize

    texture = resize(skimage.data.brick(), (HEIGHT, WIDTH), preserve_range=True).astype(np.uint8)
    background = np.stack([texture] * 3, axis=-1)
    sprites = [_sprite()]
    sprites.append(sprites[0][:, ::-1].copy())
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    truth: list[list[dict[str, Any]]] = []
    try:
        for index in range(frames):
            frame = background.copy()
            boxes = []
            for number, (sprite, corners) in enumerate(zip(sprites, _paths(frames), strict=True)):
                x, y = corners[index]
                frame[y : y + SPRITE_H, x : x + SPRITE_W] = sprite
                left, top, right, bottom = FACE
                if number == 1:  # mirrored
                    left, right = 1 - right, 1 - left
                boxes.append(
                    {
                        "object": number,
                        "box": [
                            x + left * SPRITE_W,
                            y + top * SPRITE_H,
                            x + right * SPRITE_W,
                            y + bottom * SPRITE_H,
                        ],
                    }
                )
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            truth.append(boxes)
    finally:
        writer.release()
    return truth


def iou(a: list[float], b: list[float]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score(result: dict[str, Any], truth: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Tracking quality against the ground truth: the share of ground-truth
    boxes matched (IoU >= 0.5), id switches, ids per object."""
    matched, total, switches = 0, 0, 0
    ids: dict[int, list[int]] = {}
    for frame, boxes in zip(result["frames"], truth, strict=False):
        for expected in boxes:
            total += 1
            best = max(frame["tracks"], key=lambda t: iou(t["box"], expected["box"]), default=None)
            if best is None or iou(best["box"], expected["box"]) < 0.5:
                continue
            matched += 1
            seen = ids.setdefault(expected["object"], [])
            if seen and seen[-1] != best["id"]:
                switches += 1
            seen.append(best["id"])
    return {
        "matched": matched / total if total else 0.0,
        "id_switches": switches,
        "ids": {obj: sorted(set(seen)) for obj, seen in ids.items()},
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    made = make_video(out, int(sys.argv[2]) if len(sys.argv) > 2 else 45)
    out.with_suffix(".json").write_text(json.dumps(made))
