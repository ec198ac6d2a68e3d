"""A failure predicate in Python: a measurement fixture for the cost of large
(interpreted-language) components, built by scripts/build-python-predicate.sh.
Statuses 500-599 and transport errors are failures; `slow_ms` marks slow calls."""

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

_slow_us = None


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        global _slow_us
        for key, value in config:
            if key == "slow_ms":
                try:
                    _slow_us = int(value) * 1000
                except ValueError:
                    raise Err(f"slow_ms: `{value}` is not a whole number of milliseconds")
            else:
                raise Err(f"unknown key `{key}`")
        # What it needs to see: 5xx, transport errors, and slow calls when slow_ms is set.
        return types.Interest(
            all=False,
            statuses=[types.StatusRange(min=500, max=599)],
            transport_errors=True,
            slower_than_us=None if _slow_us is None else max(_slow_us - 1, 0),
            response_headers=[],
        )

    def classify(self, outcome):
        slow = None if _slow_us is None else outcome.latency_us >= _slow_us
        if outcome.error is not None:
            return types.Verdict(types.Classification.FAILURE, slow)
        if outcome.response is not None and 500 <= outcome.response.status <= 599:
            return types.Verdict(types.Classification.FAILURE, slow)
        return types.Verdict(types.Classification.SUCCESS, slow)
