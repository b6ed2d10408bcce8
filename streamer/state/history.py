"""The temporal attribution history: every version of every key, team and organization.

Nothing is ever forgotten. A delete appends a tombstone that keeps the last
attribution; a rotation keeps the old hash resolvable and links it to the new
one; an archive row (Deleted* tables) adds history for an entity the stream
never saw. Versions are ordered by position ``(commit LSN, change index)``, so
``as_of`` answers "what was true when that transaction committed", as a
temporal join would. Pure: no I/O; new versions wait in ``unsaved`` until the
pipeline persists them with the data they attributed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from streamer.lsn import Lsn

Position = tuple[Lsn, int]  # (commit LSN of the transaction, index of the change in it)

Text = str | None


class KeyVersion(NamedTuple):
    key_alias: Text = None
    key_name: Text = None
    team_id: Text = None
    user_id: Text = None
    organization_id: Text = None
    deleted: bool = False
    rotated_to: Text = None


class TeamVersion(NamedTuple):
    team_alias: Text = None
    organization_id: Text = None
    deleted: bool = False


class OrganizationVersion(NamedTuple):
    organization_alias: Text = None
    deleted: bool = False


Version = KeyVersion | TeamVersion | OrganizationVersion


class Entity(Enum):
    """What the history versions, with its version type and the source columns it copies."""

    KEY = ("key", KeyVersion)
    TEAM = ("team", TeamVersion)
    ORGANIZATION = ("organization", OrganizationVersion)

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow Python code

    def __init__(self, label: str, version_type: type[Version]) -> None:
        self.label = label
        self.version_type = version_type
        self.empty: Version = version_type()
        self.columns: tuple[str, ...] = tuple(
            name for name in version_type._fields if name not in ("deleted", "rotated_to")
        )


class VersionChange(NamedTuple):
    """One new version, as persisted."""

    entity: Entity
    entity_id: str
    position: Position
    version: Version


KEEP = object()
"""A column value meaning "keep the previous value" (pgoutput's unchanged TOAST)."""

Values = Mapping[str, object]  # column name → str | None | KEEP; absent columns are kept too


@dataclass
class _Timeline:
    positions: list[Position] = field(default_factory=list)
    versions: list[Version] = field(default_factory=list)


class History:
    """Versioned entity maps plus the versions not yet persisted."""

    def __init__(self) -> None:
        self._timelines: dict[Entity, dict[str, _Timeline]] = {entity: {} for entity in Entity}
        self.unsaved: list[VersionChange] = []

    # --- reading -----------------------------------------------------------

    def as_of(self, entity: Entity, entity_id: str, position: Position) -> Version | None:
        """The version valid at ``position``, or None if the entity did not exist yet."""
        timeline = self._timelines[entity].get(entity_id)
        if timeline is None:
            return None
        if timeline.positions[-1] <= position:
            return timeline.versions[-1]
        index = bisect_right(timeline.positions, position)
        return timeline.versions[index - 1] if index else None

    def current(self, entity: Entity, entity_id: str) -> Version | None:
        timeline = self._timelines[entity].get(entity_id)
        return timeline.versions[-1] if timeline else None

    def count(self, entity: Entity) -> int:
        return len(self._timelines[entity])

    def versions(self, entity: Entity, entity_id: str) -> list[tuple[Position, Version]]:
        timeline = self._timelines[entity].get(entity_id)
        return list(zip(timeline.positions, timeline.versions)) if timeline else []

    def ids(self, entity: Entity) -> Iterator[str]:
        return iter(self._timelines[entity])

    # --- changes from the stream ------------------------------------------

    def upsert(self, entity: Entity, entity_id: str, values: Values, position: Position) -> None:
        """An INSERT or UPDATE of a live row: a new version unless nothing we track changed."""
        base = self.current(entity, entity_id)
        merged = _merge(base or entity.empty, values)._replace(deleted=False)
        if entity is Entity.KEY:
            merged = merged._replace(rotated_to=None)
        self._record(entity, entity_id, merged, position)

    def delete(self, entity: Entity, entity_id: str, old: Values | None, position: Position) -> None:
        """A DELETE: a tombstone keeping the last attribution (or the full old row, if sent)."""
        base = self.current(entity, entity_id) or entity.empty
        self._record(entity, entity_id, _merge(base, old or {})._replace(deleted=True), position)

    def move(self, entity: Entity, old_id: str, new_id: str, values: Values, position: Position) -> None:
        """An UPDATE that changed the primary key (a key rotation): the old id stays resolvable."""
        previous = self.current(entity, old_id) or entity.empty
        self._record(entity, new_id, _merge(previous, values)._replace(deleted=False), position)
        if entity is Entity.KEY:
            self._record(entity, old_id, previous._replace(rotated_to=new_id), position)
        else:
            self._record(entity, old_id, previous._replace(deleted=True), position)

    def archive(self, entity: Entity, entity_id: str, values: Values, position: Position) -> None:
        """A row of a Deleted* archive: history only for an entity we have never seen."""
        if entity_id not in self._timelines[entity]:
            self._record(entity, entity_id, _merge(entity.empty, values)._replace(deleted=True), position)

    def delete_all(self, entity: Entity, position: Position) -> None:
        """TRUNCATE of a live table: every live entity gets a tombstone."""
        for entity_id, timeline in list(self._timelines[entity].items()):
            if not timeline.versions[-1].deleted:
                self._record(entity, entity_id, timeline.versions[-1]._replace(deleted=True), position)

    # --- loading persisted history -----------------------------------------

    def restore(self, change: VersionChange) -> None:
        """Append a persisted version (already saved: not queued again)."""
        timeline = self._timelines[change.entity].setdefault(change.entity_id, _Timeline())
        timeline.positions.append(change.position)
        timeline.versions.append(change.version)

    def _record(self, entity: Entity, entity_id: str, version: Version, position: Position) -> None:
        timelines = self._timelines[entity]
        timeline = timelines.get(entity_id)
        if timeline is None:
            timeline = timelines[entity_id] = _Timeline()
        elif timeline.versions[-1] == version:
            return
        timeline.positions.append(position)
        timeline.versions.append(version)
        self.unsaved.append(VersionChange(entity, entity_id, position, version))

    def take_unsaved(self) -> list[VersionChange]:
        unsaved, self.unsaved = self.unsaved, []
        return unsaved


def _merge(base: Version, values: Values) -> Version:
    updates = {
        name: value for name, value in values.items() if value is not KEEP and name in base._fields
    }
    return base._replace(**updates) if updates else base
