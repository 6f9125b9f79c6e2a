"""The engine's ProbeBank: one matmul per step over every probe that running rows read.

The bank is rebuilt only when the set of (name, probe object) pairs changes. It
holds one probe per name, so a request naming a probe that was re-uploaded
while rows still read the old one waits for those rows (`replaced`).
"""

from __future__ import annotations


class BankKeeper:
    def __init__(self, num_layers: int, hidden_size: int):
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.bank = None
        self._key: tuple = ()

    def ensure(self, running_specs, extra=()) -> None:
        """A bank over every probe that running requests (their specs) and `extra` ask for."""
        from mlx_interp.probes.scoring import ProbeBank

        wanted: dict[str, object] = {}
        for spec in running_specs:
            for r in spec.probes_read:
                wanted.setdefault(r.name, r.probe)
        for r in extra:
            wanted.setdefault(r.name, r.probe)
        key = tuple(sorted((n, id(p)) for n, p in wanted.items()))
        if key != self._key or self.bank is None:
            self.bank = ProbeBank(list(wanted.values()), self.num_layers, self.hidden_size)
            self._key = key

    @staticmethod
    def replaced(running_specs, spec) -> bool:
        """Does spec name a probe that was re-uploaded since running rows took their copy of it?"""
        if not spec.probes_read:
            return False
        running = {r.name: r.probe for s in running_specs for r in s.probes_read}
        return any(running.get(r.name, r.probe) is not r.probe for r in spec.probes_read)
