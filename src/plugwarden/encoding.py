"""The one JSON encoding of what the host writes out: records, results,
job listings and error bodies (the encoding Starlette's JSONResponse uses)."""

from __future__ import annotations

import json

__all__ = ["compact_json"]

compact_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
