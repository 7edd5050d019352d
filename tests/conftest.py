"""Suite-wide test configuration.

Hypothesis profiles (select with the HYPOTHESIS_PROFILE environment variable):
    dev  default: 50 examples per property, quick local runs
    ci   200 examples per property, failing examples printed as reproduction blobs
No deadline in either: timing belongs to benchmarks, not tests.
"""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
