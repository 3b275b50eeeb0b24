"""The HTTP side of plugwarden: the Starlette app and ``plugwarden serve``."""

from plugwarden.web.app import create_app
from plugwarden.web.server import build, serve

__all__ = ["build", "create_app", "serve"]
