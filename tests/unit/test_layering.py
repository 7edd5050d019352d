"""Guard the layering rule: ``crossbook.domain`` imports only the standard library.

Every ``.py`` file under ``src/crossbook/domain/`` is parsed (never imported) and
each import statement is checked:

* a ``crossbook`` module is allowed only inside ``crossbook.domain`` (relative
  imports are resolved first, so ``from .. import engine`` is caught);
* any other top-level module must be in ``sys.stdlib_module_names``;
* dynamic imports (``__import__``, ``importlib.import_module``) are refused, since
  they would slip past this check.

An empty or missing domain directory fails the test instead of passing vacuously.
"""

import ast
import sys
from pathlib import Path

SRC_DIR = Path(__file__).resolve().parents[2] / "src"
DOMAIN_DIR = SRC_DIR / "crossbook" / "domain"
DOMAIN_PACKAGE = "crossbook.domain"
DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def module_name(path: Path, src_dir: Path) -> str:
    """Dotted module name of ``path`` (a package's ``__init__.py`` names the package)."""
    parts = list(path.relative_to(src_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Absolute module named by ``from X import ...``, resolving relative levels."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    up = node.level - 1
    if up > len(package):
        return "<beyond top-level package>"
    base = package[: len(package) - up]
    return ".".join([*base, node.module] if node.module else base)


def is_allowed(name: str) -> bool:
    """True if importing the absolute module ``name`` is allowed in the domain."""
    top = name.partition(".")[0]
    if top == "crossbook":
        return name == DOMAIN_PACKAGE or name.startswith(DOMAIN_PACKAGE + ".")
    return top in sys.stdlib_module_names


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names of the modules an import statement may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = resolve_from(node, module, is_package)
    if source == "crossbook":
        # `from crossbook import domain` loads crossbook.domain; `import *` loads everything.
        return [f"crossbook.{alias.name}" if alias.name != "*" else source for alias in node.names]
    return [source]


def is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name in DYNAMIC_IMPORTERS


def find_violations(domain_dir: Path, src_dir: Path) -> list[str]:
    """Every forbidden import under ``domain_dir``, as ``file:line: message``."""
    violations: list[str] = []
    for path in sorted(domain_dir.rglob("*.py")):
        module = module_name(path, src_dir)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(src_dir)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in imported_names(node, module, is_package):
                    if not is_allowed(name):
                        violations.append(f"{where}:{node.lineno}: imports {name}")
            elif isinstance(node, ast.Call) and is_dynamic_import(node):
                violations.append(f"{where}:{node.lineno}: dynamic import")
    return violations


def test_domain_imports_only_standard_library() -> None:
    assert DOMAIN_DIR.is_dir(), f"{DOMAIN_DIR} is missing"
    assert any(DOMAIN_DIR.rglob("*.py")), f"no Python files under {DOMAIN_DIR}: check is vacuous"
    violations = find_violations(DOMAIN_DIR, SRC_DIR)
    assert not violations, "domain/ must import only the standard library:\n" + "\n".join(
        violations
    )


# which crossbook packages each layer may import (DESIGN section 2: dependencies point inward)
LAYER_IMPORTS = {
    "crossbook.engine": ("crossbook.domain", "crossbook.engine", "crossbook.wallet_protocol"),
    "crossbook.adapters": (
        "crossbook.domain",
        "crossbook.engine",
        "crossbook.adapters",
        "crossbook.wallet_protocol",
    ),
    "crossbook.api": (
        "crossbook.domain",
        "crossbook.engine",
        "crossbook.api",
        "crossbook.wallet_protocol",
        "crossbook.__version__",
    ),
    # a separate application: the domain's ledger, the wallet port's types, SQL helpers
    "crossbook.wallet_service": (
        "crossbook.domain",
        "crossbook.wallet_protocol",
        "crossbook.engine.read_model.records",
        "crossbook.adapters.sql",
        "crossbook.wallet_service",
    ),
}


def outward_imports(package: str, allowed: tuple[str, ...]) -> list[str]:
    package_dir = SRC_DIR.joinpath(*package.split("."))
    assert any(package_dir.rglob("*.py")), f"no Python files under {package_dir}"
    found: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, SRC_DIR)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in imported_names(node, module, path.name == "__init__.py"):
                inside = name == "crossbook" or name.startswith("crossbook.")
                if inside and not any(name == a or name.startswith(a + ".") for a in allowed):
                    found.append(f"{path.relative_to(SRC_DIR)}:{node.lineno}: imports {name}")
    return found


def test_layers_import_only_inward() -> None:
    violations = [v for p, a in LAYER_IMPORTS.items() for v in outward_imports(p, a)]
    assert not violations, "imports that point outward:\n" + "\n".join(violations)
