"""The two builds of the domain, and the guard that never runs a compiled module older
than its source (`crossbook._compiled`).

Each case runs a fresh interpreter on a copy of the package in a temporary
directory (the guard decides once per process), with the ``CROSSBOOK_`` build
variables set as the case needs and none inherited. The cases on a fake build
(garbage extension files, a manifest that does not match) run everywhere; the
cases on a copy of the real build need one (`make compile`) and are skipped
without it, except where ``CROSSBOOK_EXPECT_COMPILED=1`` (`make test`, and so CI)
says there must be one: there they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import crossbook.domain.exchange
from crossbook import _compiled

SRC = _compiled.ROOT_DIR
SUFFIX = _compiled.extension_suffix()
EXPECTED = _compiled.flag(os.environ, _compiled.EXPECT_COMPILED_ENV)
EXPLICITLY_PURE = _compiled.flag(os.environ, _compiled.PURE_PYTHON_ENV)
BUILT = _compiled.inspect_build(SRC, environ={}).compiled

needs_build = pytest.mark.skipif(
    not BUILT and not EXPECTED, reason="no compiled build of the domain (`make compile`)"
)

# What a fresh interpreter reports: the build it runs, and where each domain module
# (and the group's shared library, if loaded) came from.
REPORT = """
import json, sys
import crossbook._compiled as c
import crossbook.domain.exchange, crossbook.domain.invariants
files = {
    name: module.__file__
    for name, module in sys.modules.items()
    if name.startswith(c.PACKAGE) or name == c.SHARED_LIBRARY
}
build = c.current_build()
print(json.dumps({"state": build.state, "reason": build.reason, "files": files}))
"""


def copy_package(root: Path, *, with_build: bool) -> Path:
    """The crossbook package (and, if asked, the domain's built files) under `root`."""
    built = ("*.so", "*.pyd", _compiled.MANIFEST_NAME)
    ignore = ("__pycache__", *(() if with_build else built))
    shutil.copytree(SRC / "crossbook", root / "crossbook", ignore=shutil.ignore_patterns(*ignore))
    if with_build:
        for path in SRC.glob(f"{_compiled.SHARED_LIBRARY}.*"):
            shutil.copy2(path, root / path.name)
    return root


def run(root: Path, code: str = REPORT, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CROSSBOOK_")}
    environ.update(env, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=False
    )


def report(root: Path, **env: str) -> tuple[dict[str, Any], str]:
    """The build a fresh interpreter runs under `root`, and what it printed to stderr."""
    done = run(root, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def all_from_source(files: dict[str, str]) -> bool:
    return _compiled.SHARED_LIBRARY not in files and all(f.endswith(".py") for f in files.values())


def fake_build(root: Path, manifest: dict[str, Any] | None) -> None:
    """Garbage where the extension files go (loading one would fail), and a manifest."""
    package = root / _compiled.PACKAGE_PATH
    modules = _compiled.compiled_modules(root)
    for name in _compiled.built_files(modules, SUFFIX).values():
        (root / name).write_bytes(b"not an extension module")
    if manifest is not None:
        (package / _compiled.MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")


# -- this process --------------------------------------------------------------------


def test_this_process_runs_the_build_it_was_asked_for() -> None:
    """`make test` runs the suite compiled (EXPECT), then again with PURE_PYTHON=1."""
    build = _compiled.current_build()
    modules = [name for name in sys.modules if name.startswith(_compiled.PACKAGE + ".")]
    if EXPLICITLY_PURE:
        assert build.state == "pure"
        assert crossbook.domain.exchange.__file__
        assert crossbook.domain.exchange.__file__.endswith(".py")
        assert _compiled.SHARED_LIBRARY not in sys.modules
        return
    if not build.compiled and not EXPECTED:
        pytest.skip(f"the domain runs from source here ({build.reason})")
    assert build.compiled, build.reason
    assert crossbook.domain.exchange.__file__
    assert crossbook.domain.exchange.__file__.endswith(SUFFIX)
    for name in modules:
        expected = build.extensions.get(name)
        source_only = name.rpartition(".")[2] in _compiled.NOT_COMPILED
        assert source_only or sys.modules[name].__file__ == str(expected), name


# -- no build, or a fake one: the source runs ---------------------------------------


def test_without_a_build_the_source_runs_silently(tmp_path: Path) -> None:
    result, stderr = report(copy_package(tmp_path, with_build=False))
    assert (result["state"], result["reason"]) == ("pure", "not compiled")
    assert all_from_source(result["files"])
    assert "Warning" not in stderr


def test_extension_files_without_a_manifest_are_stale(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    fake_build(root, manifest=None)
    result, stderr = report(root)
    assert result["state"] == "stale"
    assert "no build manifest" in result["reason"]
    assert all_from_source(result["files"])  # the garbage was never loaded
    assert "StaleBuildWarning" in stderr
    assert "make compile" in stderr


def test_a_manifest_that_does_not_match_is_stale(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    modules = _compiled.compiled_modules(root)
    sources = {p.name: "0" * 64 for p in _compiled.source_files(root)}
    built = _compiled.built_files(modules, SUFFIX).values()
    fake_build(
        root,
        {
            "format": _compiled.MANIFEST_FORMAT,
            "extension_suffix": SUFFIX,
            "compiled": modules,
            "sources": sources,
            "extensions": {name: "0" * 64 for name in built},
        },
    )
    result, stderr = report(root)
    assert result["state"] == "stale"
    assert "exchange.py changed since the build" in result["reason"]
    assert f"crossbook/domain/exchange{SUFFIX} was replaced since the build" in result["reason"]
    assert all_from_source(result["files"])
    assert "StaleBuildWarning" in stderr


def test_an_unreadable_manifest_is_stale(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    fake_build(root, manifest=None)
    (root / _compiled.PACKAGE_PATH / _compiled.MANIFEST_NAME).write_text("{", encoding="utf-8")
    result, _ = report(root)
    assert result["state"] == "stale"
    assert "unreadable build manifest" in result["reason"]
    assert all_from_source(result["files"])


def test_expecting_compiled_makes_a_stale_build_an_import_error(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    fake_build(root, manifest=None)
    done = run(root, CROSSBOOK_EXPECT_COMPILED="1")
    assert done.returncode != 0
    assert "CompiledDomainError" in done.stderr
    assert "no build manifest" in done.stderr


def test_expecting_compiled_without_a_build_is_an_import_error(tmp_path: Path) -> None:
    done = run(copy_package(tmp_path, with_build=False), CROSSBOOK_EXPECT_COMPILED="1")
    assert done.returncode != 0
    assert "CompiledDomainError" in done.stderr
    assert "not compiled" in done.stderr


def test_asking_for_the_source_is_never_an_error(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    fake_build(root, manifest=None)
    result, stderr = report(root, CROSSBOOK_PURE_PYTHON="1", CROSSBOOK_EXPECT_COMPILED="1")
    assert (result["state"], result["reason"]) == ("pure", "CROSSBOOK_PURE_PYTHON=1")
    assert all_from_source(result["files"])
    assert "Warning" not in stderr


def test_the_shared_library_is_refused_while_the_source_runs(tmp_path: Path) -> None:
    root = copy_package(tmp_path, with_build=False)
    fake_build(root, manifest=None)
    code = (
        "import crossbook._compiled as c\n"
        "try:\n"
        "    __import__(c.SHARED_LIBRARY)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = run(root, code, CROSSBOOK_PURE_PYTHON="1")
    assert done.returncode == 0, done.stderr
    assert f"{_compiled.SHARED_LIBRARY}: {_compiled.PACKAGE} runs from source" in done.stdout


# -- a copy of the real build ------------------------------------------------------


@pytest.fixture
def built_copy(tmp_path: Path) -> Path:
    if not BUILT:
        pytest.fail("CROSSBOOK_EXPECT_COMPILED=1 but there is no fresh compiled build")
    return copy_package(tmp_path, with_build=True)


@needs_build
def test_a_fresh_build_runs_compiled(built_copy: Path) -> None:
    result, stderr = report(built_copy)
    assert result["state"] == "compiled", result["reason"]
    files = result["files"]
    for module in _compiled.compiled_modules(built_copy):
        if f"{_compiled.PACKAGE}.{module}" in files:
            path = built_copy / _compiled.PACKAGE_PATH / f"{module}{SUFFIX}"
            assert files[f"{_compiled.PACKAGE}.{module}"] == str(path)
    assert files[_compiled.SHARED_LIBRARY] == str(
        built_copy / f"{_compiled.SHARED_LIBRARY}{SUFFIX}"
    )
    assert files[_compiled.PACKAGE].endswith("__init__.py")
    assert "Warning" not in stderr


@needs_build
def test_asking_for_the_source_beats_a_fresh_build(built_copy: Path) -> None:
    result, stderr = report(built_copy, CROSSBOOK_PURE_PYTHON="1")
    assert result["state"] == "pure"
    assert all_from_source(result["files"])
    assert "Warning" not in stderr


@needs_build
def test_an_edited_source_sends_the_whole_package_back_to_source(built_copy: Path) -> None:
    orders = built_copy / _compiled.PACKAGE_PATH / "orders.py"
    orders.write_text(orders.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    result, stderr = report(built_copy)
    assert result["state"] == "stale"
    assert result["reason"] == "orders.py changed since the build"
    assert all_from_source(result["files"])  # exchange.py too, though it did not change
    assert "StaleBuildWarning" in stderr
    assert "orders.py changed since the build" in stderr


@needs_build
def test_an_edited_source_is_an_import_error_where_compiled_is_expected(built_copy: Path) -> None:
    ledger = built_copy / _compiled.PACKAGE_PATH / "ledger.py"
    ledger.write_text(ledger.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    done = run(built_copy, CROSSBOOK_EXPECT_COMPILED="1")
    assert done.returncode != 0
    assert "CompiledDomainError" in done.stderr
    assert "ledger.py changed since the build" in done.stderr


@needs_build
def test_an_added_module_is_stale(built_copy: Path) -> None:
    (built_copy / _compiled.PACKAGE_PATH / "extra.py").write_text("X = 1\n", encoding="utf-8")
    result, _ = report(built_copy)
    assert result["state"] == "stale"
    assert result["reason"] == "extra.py added since the build"
    assert all_from_source(result["files"])


@needs_build
def test_a_removed_module_is_stale(built_copy: Path) -> None:
    (built_copy / _compiled.PACKAGE_PATH / "stops.py").unlink()  # the domain cannot import now
    build = _compiled.inspect_build(built_copy, environ={})
    assert (build.state, build.reason) == ("stale", "stops.py removed since the build")


@needs_build
def test_a_replaced_or_missing_extension_is_stale(built_copy: Path) -> None:
    package = built_copy / _compiled.PACKAGE_PATH
    with (package / f"book{SUFFIX}").open("ab") as extension:
        extension.write(b"\0")
    (package / f"fees{SUFFIX}").unlink()
    result, _ = report(built_copy)
    assert result["state"] == "stale"
    assert f"crossbook/domain/book{SUFFIX} was replaced since the build" in result["reason"]
    assert f"crossbook/domain/fees{SUFFIX} is missing" in result["reason"]
    assert all_from_source(result["files"])


@needs_build
def test_a_left_over_extension_is_stale(built_copy: Path) -> None:
    (built_copy / _compiled.PACKAGE_PATH / "x.so").write_bytes(b"left over")
    result, _ = report(built_copy)
    assert result["state"] == "stale"
    assert "crossbook/domain/x.so is not of the build" in result["reason"]
