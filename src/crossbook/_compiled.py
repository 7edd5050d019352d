"""Which build of `crossbook.domain` runs: its mypyc-compiled extension modules or its source.

`make compile` (``tools/compile_domain.py``) compiles the domain's modules (all
but `NOT_COMPILED`) as one group: an extension module beside each source and
the group's shared library, ``crossbook_domain__mypyc``, beside the
``crossbook`` package (where mypyc expects it). It then writes a manifest,
``crossbook/domain/_compiled_build.json``: the SHA-256 of every source of the
package and of every file it built.

`install` (called by ``crossbook/__init__.py``, which stays pure Python) puts a
finder first on `sys.meta_path` that owns every import of ``crossbook.domain``,
its modules and the shared library, and decides once per process, at the first
of them, which build runs:

- ``CROSSBOOK_PURE_PYTHON=1``: the source, always;
- no extension file and no manifest: the source (the pure-Python build);
- the manifest matches every source and extension file now on disk: the
  compiled modules;
- anything else is a stale build (a source edited, added or removed since the
  build; an extension file missing, replaced or left over; no readable manifest;
  a build for another interpreter): the source, with a `StaleBuildWarning` that
  says what differs.

All or nothing: the compiled modules call each other natively inside the shared
library, so one module run from source beside compiled ones would exist twice,
with two sets of classes. An edit of any source therefore sends the whole
package back to source until the next build.

Why fall back with a warning rather than fail: what runs is then always the
source as it is on disk, so a stale build costs speed, never correctness (a
developer who edits a module and runs one test file directly runs the edit).
The warning is not quiet where it matters: the test suite turns warnings into
errors, `crossbook bench engine` labels its figures with `Build.describe`, and
``CROSSBOOK_EXPECT_COMPILED=1`` (set by `make test`; a deployment that must run
compiled sets it too) makes any accidental source build an import error
(`CompiledDomainError`). An explicit ``CROSSBOOK_PURE_PYTHON=1`` never is one.

Cost: one read and hash of the sources and the built files (about 2 MB), some
10 ms, once per process.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

PACKAGE = "crossbook.domain"
PACKAGE_PATH = Path("crossbook", "domain")  # relative to the root directory
ROOT_DIR = Path(__file__).resolve().parent.parent  # holds the crossbook package (src/)
NOT_COMPILED = frozenset({"__init__", "_compile_hints"})  # these always run from source
SHARED_LIBRARY = "crossbook_domain__mypyc"  # a top-level module, beside crossbook/
MANIFEST_NAME = "_compiled_build.json"  # in the package's directory
MANIFEST_FORMAT = 1
PURE_PYTHON_ENV = "CROSSBOOK_PURE_PYTHON"
EXPECT_COMPILED_ENV = "CROSSBOOK_EXPECT_COMPILED"

State = Literal["compiled", "pure", "stale"]


class StaleBuildWarning(RuntimeWarning):
    """The compiled domain does not match its source; the source runs instead."""


class CompiledDomainError(ImportError):
    """``CROSSBOOK_EXPECT_COMPILED=1``, but the compiled domain would not run."""


@dataclass(frozen=True, slots=True)
class Build:
    """The build of the domain that runs (or would run) in a process, and why."""

    state: State
    reason: str
    extensions: Mapping[str, Path] = field(default_factory=dict)  # module name -> its file

    @property
    def compiled(self) -> bool:
        return self.state == "compiled"

    def describe(self) -> str:
        return "compiled (mypyc)" if self.compiled else f"pure Python ({self.reason})"


def flag(environ: Mapping[str, str], name: str) -> bool:
    """An on/off environment variable: anything but unset, "", "0", "false" or "no" is on."""
    return environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def extension_suffix() -> str:
    """The file suffix of this interpreter's extension modules (``.cpython-311-….so``)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_files(root_dir: Path) -> list[Path]:
    """Every source of the package, stubs included: a change of any makes a build stale."""
    return sorted(p for p in (root_dir / PACKAGE_PATH).iterdir() if p.suffix in (".py", ".pyi"))


def compiled_modules(root_dir: Path) -> list[str]:
    """The modules a build compiles (their last names): every ``.py`` but `NOT_COMPILED`."""
    return [
        p.stem for p in source_files(root_dir) if p.suffix == ".py" and p.stem not in NOT_COMPILED
    ]


def built_files(modules: Sequence[str], suffix: str) -> dict[str, str]:
    """Module name -> the file a build of `modules` makes for it, relative to the root."""
    files = {f"{PACKAGE}.{name}": str(PACKAGE_PATH / f"{name}{suffix}") for name in modules}
    files[SHARED_LIBRARY] = f"{SHARED_LIBRARY}{suffix}"
    return files


def extension_files(root_dir: Path) -> list[Path]:
    """Every extension file of a domain build on disk (of any interpreter)."""
    found = [p for p in (root_dir / PACKAGE_PATH).iterdir() if p.name.endswith((".so", ".pyd"))]
    return sorted([*found, *root_dir.glob(f"{SHARED_LIBRARY}.*")])


def inspect_build(root_dir: Path, environ: Mapping[str, str]) -> Build:
    """Which build of the domain under `root_dir` runs, by the rules of the module docstring."""
    if flag(environ, PURE_PYTHON_ENV):
        return Build("pure", f"{PURE_PYTHON_ENV}=1")
    manifest_path = root_dir / PACKAGE_PATH / MANIFEST_NAME
    if not manifest_path.exists():
        stray = extension_files(root_dir)
        if not stray:
            return Build("pure", "not compiled")
        return Build("stale", f"{stray[0].name} and no build manifest")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        problems = _differences(manifest, root_dir)
        files = built_files(manifest["compiled"], manifest["extension_suffix"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return Build("stale", f"unreadable build manifest {MANIFEST_NAME} ({error!r})")
    if problems:
        return Build("stale", "; ".join(problems))
    return Build("compiled", "fresh build", {name: root_dir / f for name, f in files.items()})


def _differences(manifest: dict[str, Any], root_dir: Path) -> list[str]:
    """What differs between the manifest and the files on disk (nothing: a fresh build)."""
    if manifest["format"] != MANIFEST_FORMAT:
        return [f"build manifest format {manifest['format']!r}, expected {MANIFEST_FORMAT}"]
    suffix = manifest["extension_suffix"]
    if suffix != extension_suffix():
        return [f"built for another interpreter ({suffix}; this one loads {extension_suffix()})"]
    recorded: dict[str, str] = manifest["sources"]
    sources = {p.name: p for p in source_files(root_dir)}
    problems = [f"{name} added since the build" for name in sorted(sources.keys() - recorded)]
    problems += [f"{name} removed since the build" for name in sorted(recorded - sources.keys())]
    problems += [
        f"{name} changed since the build"
        for name, digest in sorted(recorded.items())
        if name in sources and file_digest(sources[name]) != digest
    ]
    built: dict[str, str] = manifest["extensions"]
    if set(built) != set(built_files(manifest["compiled"], suffix).values()):
        problems.append("the build manifest's files are not those of its modules")
    for name, digest in sorted(built.items()):
        path = root_dir / name
        if not path.exists():
            problems.append(f"{name} is missing")
        elif file_digest(path) != digest:
            problems.append(f"{name} was replaced since the build")
    on_disk = {str(p.relative_to(root_dir)) for p in extension_files(root_dir)}
    problems += [f"{name} is not of the build" for name in sorted(on_disk - built.keys())]
    return problems


class DomainFinder:
    """The meta-path finder that loads every ``crossbook.domain`` module from one build."""

    def __init__(self, root_dir: Path, environ: Mapping[str, str]) -> None:
        self.root_dir = root_dir
        self.package_dir = root_dir / PACKAGE_PATH
        self.environ = environ
        self._build: Build | None = None

    def build(self) -> Build:
        """The build in use, decided at the first call (which warns if it is stale).

        With ``CROSSBOOK_EXPECT_COMPILED=1`` an accidental source build (stale, or
        never compiled) raises `CompiledDomainError` instead, at every import.
        """
        if self._build is None:
            self._build = inspect_build(self.root_dir, self.environ)
            if self._build.state == "stale" and not flag(self.environ, EXPECT_COMPILED_ENV):
                warnings.warn(
                    f"{PACKAGE} runs from source: its compiled build is stale "
                    f"({self._build.reason}). `make compile` rebuilds it.",
                    StaleBuildWarning,
                    stacklevel=2,
                )
        accidental = not self._build.compiled and not flag(self.environ, PURE_PYTHON_ENV)
        if accidental and flag(self.environ, EXPECT_COMPILED_ENV):
            raise CompiledDomainError(
                f"{EXPECT_COMPILED_ENV}=1 but {PACKAGE} would run from source "
                f"({self._build.reason}); `make compile` builds it"
            )
        return self._build

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == SHARED_LIBRARY:
            leaf = SHARED_LIBRARY
        elif fullname == PACKAGE or fullname.startswith(PACKAGE + "."):
            leaf = fullname[len(PACKAGE) + 1 :]
            if "." in leaf:
                return None  # no subpackages: the build compiles only the package's modules
        else:
            return None
        build = self.build()
        if not leaf:  # the package itself: its __init__ always runs from source
            return importlib.util.spec_from_file_location(
                fullname,
                self.package_dir / "__init__.py",
                submodule_search_locations=[str(self.package_dir)],
            )
        extension = build.extensions.get(fullname)
        if extension is not None:
            compiled = importlib.machinery.ExtensionFileLoader(fullname, str(extension))
            return importlib.util.spec_from_file_location(fullname, extension, loader=compiled)
        if fullname == SHARED_LIBRARY:
            raise ImportError(f"{fullname}: {PACKAGE} runs from source ({build.reason})")
        source = self.package_dir / f"{leaf}.py"
        if not source.exists():
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def install() -> DomainFinder:
    """Put the domain's finder first on `sys.meta_path` (once); return it."""
    for finder in sys.meta_path:
        if isinstance(finder, DomainFinder):
            return finder
    finder = DomainFinder(ROOT_DIR, os.environ)
    sys.meta_path.insert(0, finder)
    return finder


def current_build() -> Build:
    """The build of the domain that this process runs."""
    return install().build()
