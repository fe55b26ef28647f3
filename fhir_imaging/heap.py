"""The garbage collector, tuned for a server whose requests allocate much and leak nothing: the objects start-up loads
(definitions, the search registry, the validator's compiled checks: about 130,000 objects) kept out of its walks,
and its collections run by heap growth rather than by every few hundred allocations.

A write allocates tens of thousands of objects (a 22 kB study parsed, validated and indexed; a transaction Bundle of
100 studies: millions), nearly all freed by reference counting as soon as the request ends. With CPython's default
thresholds (a young collection every 700 net allocations, older ones every 10 of those) the collector ran over a
hundred times a second, walking the objects of every request in flight, and each full collection walked the loaded
definitions too: 0.4–0.8 ms of CPU a study (bench/README.md, "Write CPU"). Now:

- ``gc.freeze`` moves every object alive after start-up into a generation the collector never walks (reference
  counting still frees them); it relinks lists, no walk;
- a young collection waits for ``YOUNG_THRESHOLD`` net new container objects (allocations minus deallocations: a
  request's objects, freed when it ends, do not add up), so cyclic garbage is still collected, after at most that
  many objects (a few MiB).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # net new container objects before a young collection (CPython's default: 700)
OLDER_THRESHOLDS = (20, 10)  # young collections per middle one, middle ones per full one (default: 10, 10)
_saved: list[tuple[int, int, int]] = []


def freeze_loaded() -> None:
    """After start-up: what is alive now lives as long as the process (or until ``thaw``); collections by growth."""
    _saved.append(gc.get_threshold())
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    gc.freeze()


def thaw() -> None:
    """At shutdown (a process that starts several apps, as tests do): the frozen objects are collectable again and
    the thresholds are those before ``freeze_loaded``."""
    gc.unfreeze()
    if _saved:
        gc.set_threshold(*_saved.pop())
