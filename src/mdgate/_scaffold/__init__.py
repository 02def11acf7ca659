"""
The provider scaffold behind ``mdgate new-provider NAME``: a working provider
package in the shape of the built-in ones, rendered from the template files
under ``templates/`` (shipped in the wheel, read with :mod:`importlib.resources`).

Templates hold ``{{name}}`` (the provider name), ``{{Name}}`` (its CamelCase
class prefix), ``{{Display}}`` (its display name), ``{{EXCHANGE}}`` (the
exchange it serves) and ``{{CODE}}`` (its provider code). They end in
``.tmpl`` so that no linter, type checker or test runner takes them for code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final

__all__ = ["FILES", "NAME_RE", "Names", "ScaffoldError", "render", "write_provider"]

#: A provider name: a lowercase identifier; its upper-case form is an exchange name (<= 16 characters).
NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,15}$")

#: Output path (``{package}`` is ``mdgate_NAME``) -> template file.
FILES: Final[dict[str, str]] = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "src/{package}/__init__.py": "__init__.py.tmpl",
    "src/{package}/plugin.py": "plugin.py.tmpl",
    "src/{package}/config.py": "config.py.tmpl",
    "src/{package}/protocol.py": "protocol.py.tmpl",
    "src/{package}/symbols.py": "symbols.py.tmpl",
    "src/{package}/testing.py": "testing.py.tmpl",
    "src/{package}/py.typed": "py.typed.tmpl",
    "tests/test_protocol.py": "test_protocol.py.tmpl",
    "tests/test_conformance.py": "test_conformance.py.tmpl",
    "tests/golden/ticks.json": "golden_ticks.json.tmpl",
}

_TOKEN: Final = re.compile(r"\{\{(\w+)\}\}")


class ScaffoldError(Exception):
    """The scaffold cannot be written (a bad name, an existing directory)."""


@dataclass(frozen=True, slots=True)
class Names:
    """
    The spellings of one provider name the templates use.

    Attributes:
        name: the provider name (``acme_fx``), token ``{{name}}``: entry point, ``[providers.acme_fx]``.
        camel: the class prefix (``AcmeFx``), token ``{{Name}}``.
        display: the display name (``Acme Fx``), token ``{{Display}}``.
        exchange: the exchange it serves (``ACME_FX``), token ``{{EXCHANGE}}``.
        code: the provider code stored with every tick (``ACME_FX``), token ``{{CODE}}``.
    """

    name: str
    camel: str
    display: str
    exchange: str
    code: str

    @classmethod
    def of(cls, name: str) -> Names:
        """
        The spellings of ``name``.

        Raises:
            ScaffoldError: ``name`` is not a lowercase identifier of at most 16 characters.
        """
        if not NAME_RE.match(name):
            raise ScaffoldError(
                f"invalid provider name {name!r}: use a lowercase identifier of at most 16 characters "
                "(a letter, then letters, digits or _), e.g. acme"
            )
        words = [w for w in name.split("_") if w]
        return cls(
            name=name,
            camel="".join(w.capitalize() for w in words),
            display=" ".join(w.capitalize() for w in words),
            exchange=name.upper(),
            code=name.upper(),
        )

    @property
    def package(self) -> str:
        """The import package, ``mdgate_NAME``."""
        return f"mdgate_{self.name}"

    @property
    def distribution(self) -> str:
        """The distribution and directory name, ``mdgate-NAME``."""
        return f"mdgate-{self.name}"


def render(template: str, names: Names) -> str:
    """
    Render one template file's text for ``names``.

    Raises:
        KeyError: the template holds a token :class:`Names` does not define.
    """
    values = {"name": names.name, "Name": names.camel, "Display": names.display,
              "EXCHANGE": names.exchange, "CODE": names.code}
    return _TOKEN.sub(lambda m: values[m.group(1)], template)


def write_provider(name: str, parent: Path) -> Path:
    """
    Write the provider package ``mdgate-NAME`` under ``parent``.

    Args:
        name: the provider name (validated by :meth:`Names.of`).
        parent: the directory to create ``mdgate-NAME`` in (created if missing).

    Returns:
        The new package directory.

    Raises:
        ScaffoldError: a bad name, or ``parent/mdgate-NAME`` exists (nothing is overwritten).
    """
    names = Names.of(name)
    root = parent / names.distribution
    if root.exists():
        raise ScaffoldError(f"{root} already exists: not overwriting it (choose another --dir or name)")
    templates = files(__name__).joinpath("templates")
    rendered = {
        path.format(package=names.package): render(templates.joinpath(tmpl).read_text("utf-8"), names)
        for path, tmpl in FILES.items()
    }
    root.mkdir(parents=True)
    for rel, text in rendered.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root
