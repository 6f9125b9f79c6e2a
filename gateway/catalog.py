"""The steering vectors and probes the server can use, gathered from several library directories.

Lookup goes through the writable library first (uploads), then the user's
--vectors/--probes directories, then the ones shipped in the package; the
first holding a name wins. Uploads and deletions touch the writable one only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from mlx_interp import paths
from mlx_interp.steering.artifacts import ArtifactError

T = TypeVar("T")

SHIPPED_VECTORS = paths.SHIPPED_VECTORS
SHIPPED_PROBES = paths.SHIPPED_PROBES


class ReadOnlyArtifact(Exception):
    """A DELETE of something that lives in a read-only (shipped or user) library."""


@dataclass
class Shelf(Generic[T]):
    """Libraries of one kind (VectorLibrary or ProbeLibrary), in lookup order; the first is writable."""

    libraries: list

    def load_all(self) -> list[ArtifactError]:
        errors: list[ArtifactError] = []
        for i, lib in enumerate(self.libraries):
            errors.extend(lib.load_all(sweep=i == 0))  # the server writes the first: clear what a killed write left
        return errors

    @property
    def writable(self):
        return self.libraries[0]

    def get(self, name: str) -> T:
        for lib in self.libraries:
            if name in lib:
                return lib.get(name)
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(name in lib for lib in self.libraries)

    def names(self) -> list[str]:
        return sorted({n for lib in self.libraries for n in lib.names()})

    def describe(self) -> list[dict]:
        # Each library describes one snapshot of itself, so a DELETE landing meanwhile cannot
        # make a listed name vanish between "is it there" and "describe it" (a 500).
        found: dict[str, dict] = {}
        for lib in self.libraries:
            for item in lib.describe():
                if item["name"] not in found:
                    found[item["name"]] = {**item, "library": str(lib.root), "writable": lib is self.writable}
        return [found[n] for n in sorted(found)]

    def install(self, name: str, data: bytes, metadata: dict) -> T:
        return self.writable.install(name, data, metadata)

    def remove(self, name: str) -> None:
        if name in self.writable:
            self.writable.remove(name)
            return
        if name in self:
            raise ReadOnlyArtifact(name)
        raise KeyError(name)


def build_shelves(lm, vector_dirs, probe_dirs, writable_root: Path | None = None):
    """(vector shelf, probe shelf) for the loaded model; uploads go to the first user dir, else the user's library
    (paths.user_library(): $MLX_INTERP_HOME/library), never into the package."""
    from mlx_interp.probes.probe import ProbeLibrary
    from mlx_interp.steering.vectors import VectorLibrary

    facts = {"fingerprint": lm.fingerprint, "hidden_size": lm.hidden_size, "num_layers": lm.num_layers}
    root = writable_root or paths.user_library()

    def shelf(cls, user_dirs, shipped, sub):
        dirs = [Path(d).expanduser() for d in user_dirs] or [root / sub]
        dirs = dirs + [shipped]
        seen, libs = set(), []
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                libs.append(cls(d, **facts))
        return Shelf(libs)

    return (
        shelf(VectorLibrary, vector_dirs or [], SHIPPED_VECTORS, "vectors"),
        shelf(ProbeLibrary, probe_dirs or [], SHIPPED_PROBES, "probes"),
    )
