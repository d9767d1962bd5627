"""A local file registry of model versions: every version with its lineage, metrics and files.

Layout: ``<root>/versions/<version>/`` holds the version's files and ``entry.json``;
``<root>/aliases/<alias>.json`` points an alias (``candidate``, later ``production``, ``previous``)
at a version. A version directory appears whole or not at all (written aside, then renamed), and an
alias file is replaced atomically, so a crash never leaves a half-registered model visible.
"""

import datetime as dt
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline import atomic

ENTRY = "entry.json"
CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
REFERENCE_FILE = "reference.parquet"
"""Input rows of the newest days a version was trained on: what drift is measured against."""
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(LookupError):
    pass


@dataclass(frozen=True)
class Version:
    version: str
    directory: Path
    entry: dict

    def file(self, name: str) -> Path:
        return self.directory / name


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _version_dir(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"invalid version id {version!r}")
        return self.root / "versions" / version

    def register(self, version: str, files: dict[str, Path], entry: dict) -> Version:
        """Copy ``files`` (name -> source path) into a new version, with ``entry`` as its record."""
        target = self._version_dir(version)
        record = {**entry, "version": version, "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                  "files": {name: _sha256(path) for name, path in sorted(files.items())}}
        with atomic.atomic_dir(target) as tmp:
            for name, source in files.items():
                shutil.copy2(source, tmp / name)
            (tmp / ENTRY).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        return Version(version, target, record)

    def get(self, version_or_alias: str) -> Version:
        version = self.resolve(version_or_alias)
        directory = self._version_dir(version)
        if not (directory / ENTRY).is_file():
            raise RegistryError(f"{directory}: no such version in the registry")
        return Version(version, directory, json.loads((directory / ENTRY).read_text(encoding="utf-8")))

    def resolve(self, version_or_alias: str) -> str:
        alias_file = self.root / "aliases" / f"{version_or_alias}.json"
        if alias_file.is_file():
            return json.loads(alias_file.read_text(encoding="utf-8"))["version"]
        return version_or_alias

    def has_alias(self, alias: str) -> bool:
        return (self.root / "aliases" / f"{alias}.json").is_file()

    def set_alias(self, alias: str, version: str, reason: str) -> None:
        self.get(version)  # refuse to point at a version that is not there
        record = {"alias": alias, "version": version, "reason": reason, "at": dt.datetime.now(dt.timezone.utc).isoformat()}
        atomic.write_text(self.root / "aliases" / f"{alias}.json", json.dumps(record, indent=2))

    def promote(self, version: str, reason: str) -> str | None:
        """Make ``version`` production; the version it replaces becomes ``previous`` (returned)."""
        replaced = self.resolve(PRODUCTION) if self.has_alias(PRODUCTION) else None
        if replaced == version:
            return None
        if replaced is not None:
            self.set_alias(PREVIOUS, replaced, reason=f"replaced by {version}: {reason}")
        self.set_alias(PRODUCTION, version, reason=reason)
        return replaced

    def versions(self) -> list[str]:
        base = self.root / "versions"
        return sorted(p.name for p in base.iterdir() if (p / ENTRY).is_file()) if base.is_dir() else []


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
