"""Adapters: implementations of the engine's ports on top of outside libraries.

Only the composition root (`cli.py`, later `bootstrap`) picks one; the domain and
the engine never import this package.
"""
