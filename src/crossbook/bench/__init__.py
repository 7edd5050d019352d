"""Benchmarks, run by ``crossbook bench ...``.

Benchmarks are not tests (DESIGN §4): they print figures and assert nothing about
timing. They do check that what they measured is what they meant to measure (for
example, that no command of a stream was rejected), and refuse to report otherwise.
"""
