"""Compile `crossbook.domain` with mypyc, in place (``make compile``).

The domain's modules (all but `crossbook._compiled.NOT_COMPILED`) are compiled
as one group: an extension module beside each source, and the group's shared
library, ``src/crossbook_domain__mypyc.*.so``. The C sources and object files go
to ``build/mypyc/``. Needs a C compiler and the Python headers.

Keyed on content, not on file times: nothing is built when the manifest matches
every source and built file (`crossbook._compiled`, the same check as at import
time) and was made by the same toolchain and options. Otherwise the manifest and
the built files are removed first (so an interrupted build leaves nothing that
could pass for fresh), the group is compiled from scratch, the manifest is
written last, and a fresh interpreter checks that every compiled module is
imported compiled.

    python tools/compile_domain.py            # build unless up to date
    python tools/compile_domain.py --force    # build anyway
    python tools/compile_domain.py --remove   # remove the build: the source runs
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from crossbook import _compiled  # noqa: E402  (from this checkout's src/, just above)

BUILD_DIR = Path("build") / "mypyc"  # relative to ROOT, where setuptools runs
OPTIONS = {"opt_level": "3", "debug_level": "1", "group_name": "crossbook_domain"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--force", action="store_true", help="build even if up to date")
    parser.add_argument("--remove", action="store_true", help="remove the build and stop")
    args = parser.parse_args()
    root_dir = _compiled.ROOT_DIR
    manifest_path = root_dir / _compiled.PACKAGE_PATH / _compiled.MANIFEST_NAME
    if args.remove:
        remove_build(root_dir)
        print(f"{_compiled.PACKAGE}: compiled build removed")
        return 0
    if not args.force and up_to_date(root_dir):
        print(f"{_compiled.PACKAGE}: the compiled build is up to date")
    else:
        started = time.monotonic()
        build(root_dir)
        verify_import()
        print(f"{_compiled.PACKAGE}: compiled in {time.monotonic() - started:.0f} s")
    os.utime(manifest_path)  # make compares its time with the sources' and the directory's
    return 0


def toolchain() -> dict[str, str]:
    """What else the built files depend on: a change of any of these rebuilds."""
    return {
        "mypy": importlib.metadata.version("mypy"),
        "setuptools": importlib.metadata.version("setuptools"),
        "python": platform.python_version(),
        "options": json.dumps(OPTIONS, sort_keys=True),
    }


def up_to_date(root_dir: Path) -> bool:
    if not _compiled.inspect_build(root_dir, environ={}).compiled:
        return False
    manifest_path = root_dir / _compiled.PACKAGE_PATH / _compiled.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return bool(manifest.get("toolchain") == toolchain())


def remove_build(root_dir: Path) -> None:
    """The manifest first: a file left by an interrupted removal is then stale."""
    (root_dir / _compiled.PACKAGE_PATH / _compiled.MANIFEST_NAME).unlink(missing_ok=True)
    for path in _compiled.extension_files(root_dir):
        path.unlink()


def build(root_dir: Path) -> None:
    remove_build(root_dir)
    shutil.rmtree(ROOT / BUILD_DIR, ignore_errors=True)  # every build from scratch
    package_dir = root_dir / _compiled.PACKAGE_PATH
    sources = {p.name: _compiled.file_digest(p) for p in _compiled.source_files(root_dir)}
    modules = _compiled.compiled_modules(root_dir)  # the digests are read before compiling
    compile_group([package_dir / f"{name}.py" for name in modules])
    suffix = _compiled.extension_suffix()
    built = _compiled.built_files(modules, suffix).values()
    manifest = {
        "format": _compiled.MANIFEST_FORMAT,
        "extension_suffix": suffix,
        "toolchain": toolchain(),
        "compiled": modules,
        "sources": sources,
        "extensions": {name: _compiled.file_digest(root_dir / name) for name in built},
    }
    temporary = package_dir / f"{_compiled.MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(package_dir / _compiled.MANIFEST_NAME)


def compile_group(sources: list[Path]) -> None:
    """mypyc's C for the group, then setuptools' ``build_ext --inplace`` into src/."""
    from mypyc.build import mypycify  # noqa: PLC0415  (only when building)
    from setuptools import setup  # type: ignore[import-untyped]  # noqa: PLC0415

    os.chdir(ROOT)
    extensions = mypycify(
        [str(p) for p in sources],  # absolute: tracebacks of compiled code name these files
        opt_level=OPTIONS["opt_level"],
        debug_level=OPTIONS["debug_level"],
        group_name=OPTIONS["group_name"],
        target_dir=str(BUILD_DIR),
    )
    setup(
        name="crossbook-domain-compiled",
        package_dir={"": "src"},
        ext_modules=extensions,
        script_args=[
            "--quiet",
            "build_ext",
            "--inplace",
            f"--build-temp={BUILD_DIR / 'temp'}",
            f"--build-lib={BUILD_DIR / 'lib'}",
        ],
    )


def verify_import() -> None:
    """A fresh interpreter must import every compiled module from its extension."""
    check = (
        "import importlib, crossbook._compiled as c\n"
        "for name, path in c.current_build().extensions.items():\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__ == str(path), (module.__file__, str(path))\n"
    )
    env = {**os.environ, _compiled.EXPECT_COMPILED_ENV: "1"}
    env.pop(_compiled.PURE_PYTHON_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", check], env=env, check=True)


if __name__ == "__main__":
    sys.exit(main())
