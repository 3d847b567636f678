"""The plugin contract: a Collector says what it provides and gathers it from a Source."""

from __future__ import annotations

import time
from collections.abc import Callable

from collectors.source import Source


class Collector:
    """One subject's facts. Subclasses set `provides` and implement `gather()`.

    `gather()` reads the host only through `self.source` and leaves parsing to pure functions;
    `collect()` fills every provided key the plugin could not learn with None, so consumers
    always see the same keys whatever the host lacked, and refuses keys it did not declare.
    """

    #: The fact keys this plugin reports, like Salt's "# Provides:" comments; no others.
    provides: tuple[str, ...] = ()

    def __init__(self, source: Source, clock: Callable[[], float] = time.time):
        self.source = source
        self.clock = clock

    def gather(self) -> dict:
        raise NotImplementedError

    def collect(self) -> dict:
        facts = self.gather()
        unexpected = set(facts) - set(self.provides)
        if unexpected:
            raise ValueError(
                f"{type(self).__name__} returned undeclared facts {sorted(unexpected)}"
            )
        return {key: facts.get(key) for key in self.provides}
