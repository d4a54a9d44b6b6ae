"""Pausing Python's cyclic garbage collector while large, acyclic data is built, then freezing what was built."""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Reading and planning a large batch, or loading the embedded data file, allocate millions of
    objects that form no reference cycles; the cyclic garbage collector would only traverse them again
    and again (it more than doubled the planning time of a million cases, and the load of a
    100,000-case file). Reference counting still frees everything.

    When the collector is turned back on, every object alive is frozen first (gc.freeze): the data just
    built lives until the run ends, and a collection that traversed it again would cost about a second
    at a million cases each time. Frozen objects are still freed by reference counting; only a cycle
    among them waits for gc.unfreeze (the scripts end with the run; the test suite unfreezes after each
    test)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()
