"""mypyc's class markers, without a dependency at run time.

mypy, and so mypyc, reads the stub beside this file (``_compile_hints.pyi``),
which re-exports ``mypy_extensions.mypyc_attr``: the marker mypyc recognises.
Python runs this file instead, whose `mypyc_attr` returns the class unchanged,
exactly what ``mypy_extensions.mypyc_attr`` does at run time. So the domain
still imports only the standard library. This module is never compiled.
"""

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[T], T]:
    """A mark for mypyc only (see the module docstring): returns the class unchanged."""
    del attrs, kwattrs
    return lambda cls: cls
