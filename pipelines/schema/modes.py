"""The names of the compatibility modes between schema versions (as schema registries name them).

Kept apart from :mod:`.compat`, which needs pyspark, so the command line can offer them anywhere.
"""

from __future__ import annotations

MODES = (
    "backward",
    "backward_transitive",
    "forward",
    "forward_transitive",
    "full",
    "full_transitive",
    "none",
)
