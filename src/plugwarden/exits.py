"""How a process ended, in words: the reason names the signal or exit code."""

from __future__ import annotations

import signal

__all__ = ["exit_reason"]


def exit_reason(code: int | None, what: str = "Worker process") -> str:
    """``code`` as :meth:`subprocess.Popen.returncode` gives it (negative:
    killed by that signal; None: the status could not be read)."""
    if code is None:
        return f"{what} died (its exit status could not be read)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
            text = signal.strsignal(-code) or name
        except ValueError:
            name, text = f"signal {-code}", "unknown signal"
        return f"{what} killed by {name} ({text})"
    return f"{what} exited with code {code}"
