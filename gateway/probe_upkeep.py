"""The engine's ProbeBank: one matmul per step over every probe that running rows read.

The bank is keyed by probe identity, not name: a probe re-uploaded while rows
still read the old one gets a column of its own next to the old one, so a
re-upload never makes any request wait. Rows name their columns by `column_key`.
The bank is rebuilt only when the set of probe objects changes.
"""

from __future__ import annotations

import copy


def column_key(request) -> str:
    """The bank column of one ProbeRequest's probe object (stable while a spec holds the probe)."""
    return f"{request.name}@{id(request.probe):x}"


class BankKeeper:
    def __init__(self, num_layers: int, hidden_size: int):
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.bank = None
        self._key: tuple = ()

    def ensure(self, running_specs, extra=()) -> None:
        """A bank over every probe object that running requests (their specs) and `extra` ask for."""
        from mlx_interp.probes.scoring import ProbeBank

        wanted: dict[str, object] = {}
        for spec in running_specs:
            for r in spec.probes_read:
                wanted.setdefault(column_key(r), r.probe)
        for r in extra:
            wanted.setdefault(column_key(r), r.probe)
        key = tuple(sorted(wanted))
        if key != self._key or self.bank is None:
            self.bank = ProbeBank([_named(p, k) for k, p in wanted.items()], self.num_layers, self.hidden_size)
            self._key = key


def _named(probe, key: str):
    """A shallow copy of probe whose name is its column key (the bank refuses duplicate names)."""
    out = copy.copy(probe)
    out.name = key
    return out
