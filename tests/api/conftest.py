"""Schemathesis against the live server: tox -e api."""

from __future__ import annotations

import pytest

pytest.importorskip("schemathesis")
