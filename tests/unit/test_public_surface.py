"""
The drawn public surface, guarded.

Public: ``mdgate`` (its ``__all__``), ``mdgate.hookspecs`` (the hook
reference) and ``mdgate.testing`` (test helpers); ``mdgate.plugins`` holds the
built-in plugins (entry-point targets). Every other module has a ``_``
component in its path. The provider plugins and the example provider (the
template third parties copy) import nothing else of mdgate.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import mdgate

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "mdgate"
PLUGIN_SOURCES = [
    ROOT / "plugins" / "mdgate-yahoo" / "src",
    ROOT / "plugins" / "mdgate-dhan" / "src",
    ROOT / "tests" / "example_provider" / "src",
]

#: Everything ``import mdgate`` offers a plugin author. Adding a name is an API decision.
PUBLIC_NAMES = {
    # plugin registration and the provider contract
    "hookimpl", "ProviderSpec", "Endpoint", "Connector", "Transport", "Decoder", "Frame", "Backfill",
    "PLUGIN_API",  # the plugin API version (docs/plugin-api.md)
    # the data model
    "Tick", "Bar", "now_ms", "parse_instrument",
    # configuration
    "Settings", "Secret", "mask_url",
    # the error tree
    "MdgateError", "ConfigError", "InstrumentError", "NoRouteError", "ProviderError",
    "ProviderDisabled", "ProviderConnectionError", "RateLimitedError", "AuthenticationError",
    "SubscriptionRejected", "DecodeError", "StoreUnavailable",
    # store and route-source plugins
    "Store", "LatestTicks", "RouteSource", "RouteTable", "ExchangeRoute", "InstrumentMapping",
    # plugin commands (mdgate_add_commands)
    "CommandContext", "pass_context",
    "__version__",
}


def module_names() -> Iterator[str]:
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts)


def is_public_by_design(module: str) -> bool:
    return (
        module in ("mdgate", "mdgate.hookspecs", "mdgate.testing", "mdgate.client")
        or module.startswith(("mdgate.testing.", "mdgate.plugins.", "mdgate.__main__"))
        or module == "mdgate.plugins"
    )


def undrawn_modules(modules: Iterator[str]) -> list[str]:
    """Modules neither public by design nor private by name (a ``_`` component)."""
    return [
        m for m in modules
        if not is_public_by_design(m) and not any(part.startswith("_") for part in m.split(".")[1:])
    ]


def private_imports(source: str) -> list[str]:
    """Every ``mdgate.<x>`` a module imports, other than ``mdgate`` and ``mdgate.testing[.*]``."""
    bad: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            public = name == "mdgate.testing" or name.startswith("mdgate.testing.")
            if name.startswith("mdgate.") and not public:
                bad.append(name)
    return bad


def test_every_core_module_is_public_by_design_or_private_by_name() -> None:
    assert undrawn_modules(module_names()) == []


def test_the_module_check_sees_an_undrawn_module() -> None:
    names = iter(["mdgate", "mdgate._model", "mdgate.hookspecs", "mdgate.testing.redis",
                  "mdgate.plugins.stores.bars", "mdgate._routing.table", "mdgate.model", "mdgate.routing.x"])
    assert undrawn_modules(names) == ["mdgate.model", "mdgate.routing.x"]


def test_plugins_and_the_example_import_only_the_public_surface() -> None:
    found = {
        str(path.relative_to(ROOT)): bad
        for root in PLUGIN_SOURCES
        for path in sorted(root.rglob("*.py"))
        if (bad := private_imports(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "import these names from `mdgate` (add to its __all__ if a plugin needs one)"


def test_the_import_check_sees_private_imports() -> None:
    source = (
        "import mdgate\nfrom mdgate import Tick\nfrom mdgate.testing import FakeProviderServer\n"
        "import mdgate.testing.redis\nfrom mdgate._model import Tick\n"
        "def f():\n    from mdgate.plugins.pg_routes import cli\n"
        "if TYPE_CHECKING:\n    import mdgate._config\n"
    )
    assert private_imports(source) == ["mdgate._model", "mdgate.plugins.pg_routes", "mdgate._config"]


def test_mdgate_exports_exactly_the_listed_names_and_each_resolves() -> None:
    assert set(mdgate.__all__) == PUBLIC_NAMES
    assert len(mdgate.__all__) == len(PUBLIC_NAMES)  # no duplicates
    for name in mdgate.__all__:
        assert getattr(mdgate, name, None) is not None, name


def test_public_modules_import() -> None:
    for module in ("mdgate.hookspecs", "mdgate.testing"):
        importlib.import_module(module)
