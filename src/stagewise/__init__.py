"""stagewise: progressive delivery for services on hosts, VMs and single boxes.

The version is written in one place, pyproject.toml's `version`, and read from
the installed package's metadata (`stagewise.version()`, or `__version__`).
"""

from __future__ import annotations

import functools

UNINSTALLED = "0+unknown"
"""The version of a source tree run without being installed: it has no metadata to read."""


@functools.cache
def version() -> str:
    """This stagewise's version, as pyproject.toml gives it (read once, when first asked)."""
    from importlib import metadata  # here, not at the top: it costs every process tens of milliseconds

    try:
        return metadata.version("stagewise")
    except metadata.PackageNotFoundError:
        return UNINSTALLED


def __getattr__(name: str) -> str:
    # read on first use, not at import: the builtin router and the CLI start faster without it
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
