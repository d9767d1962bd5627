"""A local file registry of model versions: every version with its lineage, metrics and files, the
aliases that say which version serves, and a ledger of every move.

Layout: ``<root>/versions/<version>/`` holds a version's files and ``entry.json``; it appears whole
or not at all (written aside, then renamed) and never changes afterwards. ``<root>/state.json``
holds the mutable part: the aliases (``candidate``, ``production``, ``previous``), the gray
release in progress (``canary``), the sha256 of the package first built for each version, and the
history ledger (which version became production when, why and by whom). All of it lives in one
file, replaced atomically under a file lock: a move of ``production`` and ``previous`` together
with its ledger line is one rename, so a process killed half-way leaves the state before or after
the move, never between, and two writers at once cannot lose each other's update.
"""

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import atomic
from pipeline.dataset import DatasetConfig

ENTRY, STATE_FILE, LOCK_FILE = "entry.json", "state.json", "registry.lock"
CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
REFERENCE_FILE = "reference.parquet"
"""Input rows of the newest days a version was trained on: what drift is measured against."""
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

PROMOTION, ROLLBACK = "promotion", "rollback"
CANARY_STARTED, CANARY_ROLLED_OUT, CANARY_ROLLED_BACK = "canary_started", "canary_rolled_out", "canary_rolled_back"
CANARY_SUPERSEDED = "canary_superseded"


class RegistryError(LookupError):
    pass


class ForeignModelError(RegistryError):
    """A version trained on another dataset, or on other features, than the one running."""


@dataclass(frozen=True)
class DatasetIdentity:
    """What a version was trained on, as its lineage records it: the dataset's name and its features."""

    name: str
    features: tuple[str, ...]

    @classmethod
    def of(cls, config: DatasetConfig) -> "DatasetIdentity":
        return cls(config.name, tuple(f.name for f in config.features))

    def lineage(self) -> dict:
        return {"dataset": self.name, "features": list(self.features)}


@dataclass(frozen=True)
class Release:
    """What ``Registry.release`` did: ``to`` is "all sites", "canary" or "none" (refused because
    ``newer``, a newer day's version, serves); ``replaced`` is the production it replaced."""

    to: str
    replaced: str | None = None
    newer: str | None = None


@dataclass(frozen=True)
class Version:
    version: str
    directory: Path
    entry: dict

    def file(self, name: str) -> Path:
        return self.directory / name

    @property
    def partition(self) -> str:
        """The day whose run trained this version."""
        return self.entry["lineage"]["partition"]


@dataclass(frozen=True)
class Canary:
    """A gray release: ``version`` serves ``sites`` from the day after ``started`` for
    ``window_days`` days, while every other site keeps production."""

    version: str
    sites: tuple[str, ...]
    started: str
    window_days: int
    trained_through: str | None = None
    """Set when ``version`` took over a running gray release: the newest day it trained on. The
    window's rows up to that day may be in its training set, so the verdict counts the rows after it."""

    @property
    def first_day(self) -> dt.date:
        return dt.date.fromisoformat(self.started) + dt.timedelta(days=1)

    @property
    def judged_from(self) -> dt.date:
        """The first day whose served rows the verdict counts."""
        if self.trained_through is None:
            return self.first_day
        return max(self.first_day, dt.date.fromisoformat(self.trained_through) + dt.timedelta(days=1))

    @property
    def last_day(self) -> dt.date:
        return self.first_day + dt.timedelta(days=self.window_days - 1)


class Registry:
    """``dataset``: the running dataset. When given, every version registered records it in its lineage,
    and a version trained on another dataset or other features is refused wherever it is read (a data
    folder that holds another dataset's registry, or a dataset whose features changed)."""

    def __init__(self, root: Path, dataset: DatasetIdentity | None = None):
        self.root = Path(root)
        self.dataset = dataset

    def _version_dir(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"invalid version id {version!r}")
        return self.root / "versions" / version

    # Versions: written once, read many times.

    def register(self, version: str, files: dict[str, Path], entry: dict) -> Version:
        """Copy ``files`` (name -> source path) into a new version, with ``entry`` as its record."""
        target = self._version_dir(version)
        if self.dataset is not None:
            entry = {**entry, "lineage": {**self.dataset.lineage(), **entry.get("lineage", {})}}
            self._check_dataset(version, entry)
        record = {**entry, "version": version, "registered_at": _now(),
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
        entry = json.loads((directory / ENTRY).read_text(encoding="utf-8"))
        self._check_dataset(version, entry)
        return Version(version, directory, entry)

    def _check_dataset(self, version: str, entry: dict) -> None:
        """Refuse ``version`` when it was trained on another dataset or other features than the
        running one (versions registered before features were recorded are judged by name)."""
        if self.dataset is None:
            return
        lineage = entry.get("lineage", {})
        name, features = lineage.get("dataset"), lineage.get("features")
        if name == self.dataset.name and (features is None or set(features) == set(self.dataset.features)):
            return  # the order of the features in the YAML does not matter: the encoding names them
        differs = (f"dataset {name!r}, not {self.dataset.name!r}" if name != self.dataset.name else
                   f"features {_feature_change(features, self.dataset.features)}")
        raise ForeignModelError(
            f"{self.root}: version {version} was trained on {differs}: it cannot serve the running dataset. "
            f"Each dataset needs its own data folder (EVERGREEN_DATA_DIR; by default data/<dataset name>/); "
            f"after a change of features, start a new data folder or rename the dataset")

    def versions(self) -> list[str]:
        base = self.root / "versions"
        return sorted(p.name for p in base.iterdir() if (p / ENTRY).is_file()) if base.is_dir() else []

    # The state: aliases, canary, packages, ledger. Read without the lock (the file is replaced
    # atomically); changed only inside ``_transaction``.

    def state(self) -> dict:
        path = self.root / STATE_FILE
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return {"aliases": {}, "canary": None, "packages": {}, "history": [], **state}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict]:
        """The state, to change in place; written back atomically when the block succeeds, while an
        exclusive lock keeps every other writer (process or thread) waiting."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.state()
            yield state
            atomic.write_text(self.root / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))

    def resolve(self, version_or_alias: str) -> str:
        alias = self.state()["aliases"].get(version_or_alias)
        return alias["version"] if alias else version_or_alias

    def has_alias(self, alias: str) -> bool:
        return alias in self.state()["aliases"]

    def set_alias(self, alias: str, version: str, reason: str, by: str) -> None:
        self.get(version)  # refuse to point at a version that is not there
        with self._transaction() as state:
            _point(state, alias, version, reason, by)

    def point_unless_newer(self, alias: str, version: str, reason: str, by: str) -> Version | None:
        """Point ``alias`` at ``version`` unless it holds a newer day's version (returned): a backfill
        of older days must not turn an alias's clock back. Checked and moved under one lock, so two
        runs finishing at once cannot both pass the check and leave the older day's model."""
        candidate = self.get(version)
        with self._transaction() as state:
            if (newer := self._newer_day(_held(state, alias), candidate)) is not None:
                return newer
            _point(state, alias, version, reason, by)
            return None

    def release(self, version: str, canary: Canary | None, reason: str, by: str) -> Release:
        """Serve ``version``: to ``canary.sites`` as a gray release when there is a production to
        keep serving the rest and ``canary`` is given, otherwise to every site. Refused when
        production or the gray release is of a newer day. Decided and moved under one lock, so of
        any number of concurrent releases the newest day's model serves, whatever their order."""
        candidate = self.get(version)
        with self._transaction() as state:
            serving = _held(state, PRODUCTION) + ([state["canary"]["version"]] if state["canary"] else [])
            if (newer := self._newer_day(serving, candidate)) is not None:
                return Release("none", newer=newer.version)
            if canary is not None and PRODUCTION in state["aliases"]:
                _start_canary(state, canary, reason, by)
                return Release("canary")
            return Release("all sites", replaced=_promote(state, version, reason, by))

    def _newer_day(self, versions: list[str], version: Version) -> Version | None:
        """The first of ``versions`` trained on a newer day than ``version``."""
        return next((held for held in map(self.get, versions) if held.partition > version.partition), None)

    def promote(self, version: str, reason: str, by: str) -> str | None:
        """Make ``version`` production for every site; the version it replaces becomes ``previous``
        (returned). A gray release in progress is over: its outcome is this promotion."""
        self.get(version)
        with self._transaction() as state:
            return _promote(state, version, reason, by)

    def rollback(self, target: str, reason: str, by: str) -> tuple[str, str | None]:
        """Point production back at ``target`` (a version or an alias, usually ``previous``) and end
        any gray release; returns (new production, the version it replaced)."""
        version = self.get(target).version
        with self._transaction() as state:
            if state["canary"] is not None:
                _log(state, CANARY_ROLLED_BACK, state["canary"]["version"], reason, by)
                state["canary"] = None
            return version, _move_production(state, version, ROLLBACK, reason, by)

    # Gray release.

    def canary(self) -> Canary | None:
        canary = self.state()["canary"]
        return Canary(**{**canary, "sites": tuple(canary["sites"])}) if canary else None

    def start_canary(self, canary: Canary, reason: str, by: str) -> None:
        """Serve ``canary.version`` to its sites only; a gray release already running is replaced."""
        self.get(canary.version)
        with self._transaction() as state:
            _start_canary(state, canary, reason, by)

    def conclude_canary(self, version: str, roll_out: bool, reason: str, by: str) -> bool:
        """Roll the gray release of ``version`` out to every site, or back (every site keeps
        production). False when ``version`` is no longer the gray release (already concluded, or
        replaced): a repeated request changes nothing."""
        with self._transaction() as state:
            if state["canary"] is None or state["canary"]["version"] != version:
                return False
            state["canary"] = None
            if roll_out:
                _move_production(state, version, CANARY_ROLLED_OUT, reason, by)
            else:
                _log(state, CANARY_ROLLED_BACK, version, reason, by)
            return True

    def serving(self, site: str) -> str | None:
        """The version a site runs: the gray release's for its sites, production for the rest."""
        state = self.state()
        canary = state["canary"]
        if canary is not None and site in canary["sites"]:
            return canary["version"]
        production = state["aliases"].get(PRODUCTION)
        return production["version"] if production else None

    # Packages and the ledger.

    def record_package(self, version: str, sha256: str) -> str:
        """Remember the sha256 of the first package built for ``version`` and return it; a later
        build must reproduce it byte for byte (the caller compares)."""
        with self._transaction() as state:
            return state["packages"].setdefault(version, sha256)

    def package_sha256(self, version: str) -> str | None:
        return self.state()["packages"].get(version)

    def history(self) -> list[dict]:
        """Every production move and gray-release step, oldest first: when, what, why, by whom."""
        return self.state()["history"]

    def past_production(self, limit: int) -> list[str]:
        """The newest ``limit`` versions that served production before the current one, newest first."""
        current = self.resolve(PRODUCTION) if self.has_alias(PRODUCTION) else None
        served = dict.fromkeys(h["production"] for h in reversed(self.history()) if h["production"] not in (None, current))
        return list(served)[:limit]


def _held(state: dict, alias: str) -> list[str]:
    """The version ``alias`` points at, as a list of one, or an empty list."""
    return [state["aliases"][alias]["version"]] if alias in state["aliases"] else []


def _promote(state: dict, version: str, reason: str, by: str) -> str | None:
    """Production moves to ``version``; a gray release in progress is over (this is its outcome)."""
    replaced = _move_production(state, version, PROMOTION, reason, by)
    if state["canary"] is not None and state["canary"]["version"] != version:
        _log(state, CANARY_SUPERSEDED, state["canary"]["version"], reason, by)
    state["canary"] = None
    return replaced


def _start_canary(state: dict, canary: Canary, reason: str, by: str) -> None:
    if state["canary"] is not None:
        _log(state, CANARY_SUPERSEDED, state["canary"]["version"], f"replaced by {canary.version}", by)
    state["canary"] = {**asdict(canary), "sites": list(canary.sites)}
    _log(state, CANARY_STARTED, canary.version, reason, by, sites=list(canary.sites))


def _point(state: dict, alias: str, version: str, reason: str, by: str) -> None:
    state["aliases"][alias] = {"version": version, "reason": reason, "by": by, "at": _now()}


def _move_production(state: dict, version: str, event: str, reason: str, by: str) -> str | None:
    current = state["aliases"].get(PRODUCTION)
    replaced = current["version"] if current else None
    if replaced == version:
        return None
    if replaced is not None:
        _point(state, PREVIOUS, replaced, f"replaced by {version}: {reason}", by)
    _point(state, PRODUCTION, version, reason, by)
    _log(state, event, version, reason, by, replaced=replaced)
    return replaced


def _log(state: dict, event: str, version: str, reason: str, by: str, **details) -> None:
    production = state["aliases"].get(PRODUCTION)
    state["history"].append({"at": _now(), "event": event, "version": version, "reason": reason, "by": by,
                             "production": production["version"] if production else None, **details})


def _feature_change(trained: list[str], running: tuple[str, ...]) -> str:
    """How the running features differ from those a version was trained on."""
    added, removed = [f for f in running if f not in trained], [f for f in trained if f not in running]
    return f"other than the running dataset's (it adds {added} and drops {removed})"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
