"""Root causes of import failures: the reason names the cause and the fix."""

from __future__ import annotations

import re

from plugwarden.exceptions import describe

__all__ = [
    "REINSTALL",
    "SEE_LOG",
    "import_failure_reason",
    "missing_attribute_reason",
    "pip_name",
]

# What an author-side fix ends with: the installed copy is what runs.
REINSTALL = "rebuild and reinstall the plugin's distribution and restart the plugin"
# Where the traceback is: never in a reason.
SEE_LOG = "The traceback is in the host's log."

# Import names whose distribution is called something else.
_PIP_NAMES = {
    "cv2": "opencv-python",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "PyYAML",
    "bs4": "beautifulsoup4",
    "pynvml": "nvidia-ml-py",
    "google.protobuf": "protobuf",
    "dateutil": "python-dateutil",
    "attr": "attrs",
}


def pip_name(import_name: str) -> str:
    return _PIP_NAMES.get(import_name, _PIP_NAMES.get(import_name.split(".")[0], import_name))


_CUDA_LIBRARY = re.compile(
    r"(lib(?:cuda|cudart|cublas\w*|cudnn\w*|nvrtc|cufft|curand|cusparse|cusolver|nccl|nvjitlink|nvToolsExt)[\w.\-]*\.so[\w.]*)"
)


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def import_failure_reason(module: str, exc: BaseException) -> str:
    """Why importing ``module`` failed, from the innermost cause that says."""
    chain = _chain(exc)
    for cause in chain:
        match = _CUDA_LIBRARY.search(str(cause))
        if isinstance(cause, ImportError | OSError) and match:
            return (
                f"CUDA library {match.group(1)} failed to load while importing '{module}' "
                f"({describe(cause)}). Install the CUDA runtime (or a torch build) that "
                "matches your driver, or run the plugin on a machine with a GPU."
            )
    for cause in reversed(chain):
        if isinstance(cause, SyntaxError):
            return (
                f"Syntax error in {cause.filename} line {cause.lineno}: {cause.msg}. "
                f"Fix the plugin's source (importing '{module}'), then {REINSTALL}."
            )
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            missing = cause.name
            if missing == module or module.startswith(missing + "."):
                return (
                    f"Module '{module}', which the plugin's entry point names, is not in its "
                    "distribution. Fix the entry point in the plugin's pyproject.toml "
                    f'([project.entry-points."plugwarden.plugins"]), then {REINSTALL}.'
                )
            package = pip_name(missing.split(".")[0])
            return (
                f"Module '{missing}' not found. Install with: pip install {package} "
                f"(operator). The plugin imports it without declaring it: its author should add "
                f"'{package}' to the dependencies in its pyproject.toml, then {REINSTALL}."
            )
    return f"Import of '{module}' failed: {describe(exc)}. {SEE_LOG}"


def missing_attribute_reason(module: str, attr: str, exc: BaseException) -> str:
    """An entry point ``module:attr`` whose attribute is not there."""
    return (
        f"Entry point '{module}:{attr}' names an attribute the module does not have "
        f"({describe(exc)}). Fix the entry point in the plugin's pyproject.toml "
        f'([project.entry-points."plugwarden.plugins"]), then {REINSTALL}.'
    )
