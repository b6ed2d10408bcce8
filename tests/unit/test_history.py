"""The temporal history: versions by position, nothing forgotten."""

from __future__ import annotations

from streamer.state.history import KEEP, Entity, History, KeyVersion, TeamVersion

KEY = Entity.KEY
TEAM = Entity.TEAM


def key_values(alias: str | None = "a", team: str | None = "t1", **extra: object) -> dict[str, object]:
    return {"key_alias": alias, "key_name": "sk-...abcd", "team_id": team, "user_id": "u", "organization_id": None} | extra


def test_as_of_answers_what_was_true_at_each_position() -> None:
    h = History()
    h.upsert(KEY, "k", key_values(team="t1"), (100, 1))
    h.upsert(KEY, "k", key_values(team="t2"), (200, 1))
    assert h.as_of(KEY, "k", (99, 9)) is None
    assert h.as_of(KEY, "k", (100, 1)).team_id == "t1"  # type: ignore[union-attr]
    assert h.as_of(KEY, "k", (150, 0)).team_id == "t1"  # type: ignore[union-attr]
    assert h.as_of(KEY, "k", (200, 2)).team_id == "t2"  # type: ignore[union-attr]
    assert h.as_of(KEY, "unknown", (300, 0)) is None


def test_delete_keeps_a_tombstone_with_the_last_attribution() -> None:
    h = History()
    h.upsert(KEY, "k", key_values(), (100, 1))
    h.delete(KEY, "k", None, (200, 1))
    assert h.current(KEY, "k") == KeyVersion("a", "sk-...abcd", "t1", "u", None, deleted=True)
    assert [v.deleted for _, v in h.versions(KEY, "k")] == [False, True]


def test_delete_with_full_old_row_of_an_unseen_key() -> None:
    h = History()
    h.delete(KEY, "k", key_values(alias="from-old-row"), (100, 1))
    assert h.current(KEY, "k") == KeyVersion("from-old-row", "sk-...abcd", "t1", "u", None, deleted=True)


def test_rotation_links_old_hash_to_new_and_keeps_it_resolvable() -> None:
    h = History()
    h.upsert(KEY, "old", key_values(), (100, 1))
    h.move(KEY, "old", "new", {"key_name": "sk-...wxyz"}, (200, 1))
    assert h.current(KEY, "old") == KeyVersion("a", "sk-...abcd", "t1", "u", None, rotated_to="new")
    assert h.current(KEY, "new") == KeyVersion("a", "sk-...wxyz", "t1", "u", None)
    h.upsert(KEY, "new", key_values(team="t9"), (300, 1))
    assert h.current(KEY, "old").team_id == "t1"  # type: ignore[union-attr]


def test_keep_means_previous_value_never_null() -> None:
    h = History()
    h.upsert(KEY, "k", key_values(alias="long alias"), (100, 1))
    h.upsert(KEY, "k", key_values(alias=KEEP, team="t2"), (200, 1))
    assert h.current(KEY, "k").key_alias == "long alias"  # type: ignore[union-attr]
    assert h.current(KEY, "k").team_id == "t2"  # type: ignore[union-attr]


def test_unchanged_attribution_adds_no_version() -> None:
    h = History()
    h.upsert(KEY, "k", key_values(), (100, 1))
    h.take_unsaved()
    h.upsert(KEY, "k", key_values(), (200, 1))  # e.g. the proxy updating the key's spend
    assert len(h.versions(KEY, "k")) == 1 and h.unsaved == []


def test_archive_only_adds_history_for_unseen_entities() -> None:
    h = History()
    h.upsert(TEAM, "t1", {"team_alias": "Live", "organization_id": None}, (100, 1))
    h.archive(TEAM, "t1", {"team_alias": "Archived"}, (200, 1))
    h.archive(TEAM, "t2", {"team_alias": "Gone"}, (200, 2))
    assert h.current(TEAM, "t1") == TeamVersion("Live", None, False)
    assert h.current(TEAM, "t2") == TeamVersion("Gone", None, True)


def test_reinsert_after_delete_revives() -> None:
    h = History()
    h.upsert(TEAM, "t1", {"team_alias": "A"}, (100, 1))
    h.delete(TEAM, "t1", None, (200, 1))
    h.upsert(TEAM, "t1", {"team_alias": "B"}, (300, 1))
    assert h.current(TEAM, "t1") == TeamVersion("B", None, False)
    assert h.as_of(TEAM, "t1", (250, 0)) == TeamVersion("A", None, True)


def test_truncate_tombstones_every_live_entity() -> None:
    h = History()
    h.upsert(TEAM, "t1", {"team_alias": "A"}, (100, 1))
    h.upsert(TEAM, "t2", {"team_alias": "B"}, (100, 2))
    h.delete_all(TEAM, (200, 1))
    assert [h.current(TEAM, t).deleted for t in ("t1", "t2")] == [True, True]  # type: ignore[union-attr]


def test_unsaved_lists_each_new_version_once_in_order() -> None:
    h = History()
    h.upsert(KEY, "old", key_values(), (100, 1))
    h.move(KEY, "old", "new", {}, (200, 1))
    changes = h.take_unsaved()
    assert [(c.entity_id, c.position) for c in changes] == [("old", (100, 1)), ("new", (200, 1)), ("old", (200, 1))]
    assert h.take_unsaved() == []
