"""The HTTP side of plugwarden: the Starlette app (:mod:`.app`), the
uvicorn server around it (:mod:`.server`) and ``plugwarden serve``
(:mod:`.launch`).

Nothing is imported with the package: ``plugwarden serve`` imports the web
stack only once the plugins are starting (start time; docs/benchmarks.md).
"""
