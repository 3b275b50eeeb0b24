"""What a plugin's processes find in their environment: no secret of the host.

The zygote and every worker start from :func:`base_environment`, an
allowlist of the host's variables that programs need and that carry no
secret (the search path, home, locale, time zone, temporary directory,
thread counts, the CUDA and NVIDIA variables a GPU plugin needs), then the
plugin's own ``env`` table from the operator's config. ``PLUGWARDEN_*``
never passes, not even from an ``env`` table; proxies and tokens pass only
when the operator puts them in the plugin's table (docs/guides/operating.md#host-config).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["RESERVED_PREFIX", "base_environment", "env_table"]

RESERVED_PREFIX = "PLUGWARDEN_"
ALLOWED = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OPENBLAS_")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` a plugin's processes may see."""
    return {
        key: value
        for key, value in environ.items()
        if (key in ALLOWED or key.startswith(ALLOWED_PREFIXES))
        and not key.startswith(RESERVED_PREFIX)
    }


def env_table(table: object) -> dict[str, str]:
    """A plugin's ``env`` table, checked: names of variables to strings.
    Raises ValueError naming what is wrong."""
    if not isinstance(table, dict):
        raise ValueError(f'expected a table of NAME = "value", got {table!r}')
    for key, value in table.items():
        if not _NAME.match(key):
            raise ValueError(f"{key!r} is not an environment variable name")
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"{key} is the host's own (PLUGWARDEN_*): it never reaches a plugin")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"{key}: expected a string, got {value!r}")
    return dict(table)
