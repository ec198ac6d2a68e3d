"""A failure predicate in Python, built with componentize-py (scripts/build-polyglot-plugins.sh).

Failures: transport errors, statuses in `failure_statuses` (default 500-599), and any
response carrying the header named by `failure_header`. `slow_ms` marks calls at least
that slow as slow; without it the breaker's own `slow_call.duration` decides.

Config keys (all optional): `failure_statuses` ("500-599,429"), `failure_header`, `slow_ms`.
"""

import wit_world
from wit_world.imports import host, types
from componentize_py_types import Err

# Settings parsed by `init`: module globals live as long as the instance.
_failure_statuses = [(500, 599)]
_failure_header = None
_slow_us = None


def _statuses(text):
    """'500-599,429' as inclusive ranges; raises ValueError on anything else."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        low = int(low)
        high = int(high) if high else low
        if not 100 <= low <= high <= 599:
            raise ValueError(part)
        ranges.append((low, high))
    return ranges


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        global _failure_statuses, _failure_header, _slow_us
        for key, value in config:
            if key == "failure_statuses":
                try:
                    _failure_statuses = _statuses(value)
                except ValueError:
                    raise Err(f"failure_statuses: `{value}` is not a list of statuses or ranges like 500-599")
            elif key == "failure_header":
                _failure_header = value
            elif key == "slow_ms":
                try:
                    _slow_us = int(value) * 1000
                except ValueError:
                    raise Err(f"slow_ms: `{value}` is not a whole number of milliseconds")
            else:
                raise Err(f"unknown config key `{key}`")
        host.log(host.LogLevel.INFO, "python predicate ready")
        # What it is asked about; healthy traffic is judged by failure_when without a call.
        return types.Interest(
            all=False,
            # Every status from 300 up, so that one it does not list stays a success.
            statuses=[types.StatusRange(min=low, max=high) for low, high in _failure_statuses]
            + [types.StatusRange(min=300, max=999)],
            transport_errors=True,
            slower_than_us=None if _slow_us is None else max(_slow_us - 1, 0),
            response_headers=[] if _failure_header is None else [_failure_header.lower()],
        )

    def classify(self, outcome):
        slow = None if _slow_us is None else outcome.latency_us >= _slow_us
        response = outcome.response
        if outcome.error is not None:
            verdict = types.Classification.FAILURE
        elif response is None:
            verdict = types.Classification.IGNORE
        elif any(low <= response.status <= high for low, high in _failure_statuses):
            verdict = types.Classification.FAILURE
        # Asked of the host only when configured: each header read is a host call.
        elif _failure_header and host.header(host.Message.RESPONSE, _failure_header):
            verdict = types.Classification.FAILURE
        else:
            verdict = types.Classification.SUCCESS
        return types.Verdict(verdict, slow)
