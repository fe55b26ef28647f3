"""The objects a process loads once and keeps (definitions, the search registry, the validator's compiled checks:
about 130,000 objects), kept out of the garbage collector's full collections.

A write allocates tens of thousands of objects (a transaction Bundle of 100 studies: millions), so the collector
runs often, and each of its full collections walked every object alive, the loaded definitions included: 0.8 ms of
CPU a study in transactions of 100 (bench/README.md). ``gc.freeze`` moves every object alive at that moment into a
generation the collector never walks; reference counting still frees them. Both calls only relink lists (no walk).
"""

from __future__ import annotations

import gc


def freeze_loaded() -> None:
    """After start-up: what is alive now lives as long as the process (or until ``thaw``)."""
    gc.freeze()


def thaw() -> None:
    """At shutdown (a process that starts several apps, as tests do): the frozen objects are collectable again."""
    gc.unfreeze()
