"""
The plugin API version: what this mdgate offers plugins, and the one rule
that says whether a plugin built for another version may load.

A plugin declares the version it was built for in its entry-point module
(the module its ``mdgate`` entry point names) as ``MDGATE_PLUGIN_API =
"MAJOR.MINOR"``. It is compatible when its MAJOR equals :data:`PLUGIN_API`'s
and its MINOR is not greater: a minor release only adds (a plugin built for
1.0 runs on 1.3; one built for 1.3 may use what 1.0 lacks), a major release
may remove or change. ``docs/plugin-api.md`` is the policy.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ASSUMED_API", "DECLARATION", "PLUGIN_API", "api_problem", "undeclared_warning"]

#: The plugin API this mdgate provides, ``"MAJOR.MINOR"``.
PLUGIN_API: Final = "1.0"
#: The module-level name a plugin's entry-point module declares its version in.
DECLARATION: Final = "MDGATE_PLUGIN_API"
#: What a plugin that declares nothing is taken to be built for (it predates the declaration).
ASSUMED_API: Final = "1.0"

_VERSION_RE: Final = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$")


def _parse(version: str) -> tuple[int, int]:
    found = _VERSION_RE.match(version)
    if found is None:
        raise ValueError(version)
    return int(found.group(1)), int(found.group(2))


def api_problem(declared: object, provided: str = PLUGIN_API) -> str | None:
    """
    Why a plugin that declares ``declared`` cannot load on plugin API ``provided``; ``None`` if it can.

    Args:
        declared: the plugin's ``MDGATE_PLUGIN_API`` value (anything a plugin wrote).
        provided: the plugin API of this mdgate.
    """
    major, minor = _parse(provided)
    if not isinstance(declared, str) or not _VERSION_RE.match(declared):
        return (
            f"declares {DECLARATION} = {declared!r:.40}, not a version \"MAJOR.MINOR\"; "
            f"this mdgate provides plugin API {provided}"
        )
    want_major, want_minor = _parse(declared)
    if want_major == major and want_minor <= minor:
        return None
    advice = (
        f"upgrade mdgate or install a release of the plugin built for {major}.x"
        if (want_major, want_minor) > (major, minor)
        else f"install a release of the plugin built for {major}.x"
    )
    return f"built for mdgate plugin API {declared}; this mdgate provides {provided} ({advice})"


def undeclared_warning() -> str:
    """The warning shown for a plugin whose entry-point module declares no version."""
    return f"declares no {DECLARATION}; assuming {ASSUMED_API}"
