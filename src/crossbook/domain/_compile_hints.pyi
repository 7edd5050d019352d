# What mypy (and mypyc) sees of `_compile_hints.py`: mypyc's own marker.
from mypy_extensions import mypyc_attr as mypyc_attr
