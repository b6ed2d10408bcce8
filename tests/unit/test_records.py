"""The published record contract: committed JSON Schemas match the models, values match the schemas."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.enrich import AttributedRecord
from streamer.records import SpendAttributed, spend_value, write_schemas

SCHEMAS = Path(__file__).parents[2] / "config" / "schemas"


def test_committed_schemas_are_generated_from_the_models(tmp_path: Path) -> None:
    for generated in write_schemas(tmp_path):
        committed = SCHEMAS / generated.name
        assert committed.exists(), f"{committed} missing: run python -m streamer.records config/schemas"
        assert json.loads(committed.read_text()) == json.loads(generated.read_text()), (
            f"{committed.name} is stale: run python -m streamer.records config/schemas"
        )


def test_spend_value_fits_the_schema_and_carries_every_attribution_field() -> None:
    record = AttributedRecord("r1", "abc", "alias", "sk-...1", "t", "Team", "o", "Org", "u", "0.0012", "gpt",
                              "2026-01-01 00:00:00.123", "key_history", None, "0/16B3748", "2026-01-01T00:00:00+00:00")
    value = SpendAttributed.model_validate_json(spend_value(record))
    assert value.spend == 0.0012 and value.commit_lsn == "0/16B3748" and value.schema_version == 1
    assert set(json.loads(spend_value(record))) == set(AttributedRecord._fields) | {"schema_version"}


def test_spend_value_escapes_text_and_refuses_non_finite_numbers() -> None:
    record = AttributedRecord('r"\\1', "k", 'al"ias\n', None, "t", "Équipe ✓", None, None, None, "NaN", None,
                              None, "unattributed", "unknown_key", "0/1", "2026-01-01T00:00:00+00:00")
    value = json.loads(spend_value(record))
    assert value["request_id"] == 'r"\\1' and value["key_alias"] == 'al"ias\n' and value["team_alias"] == "Équipe ✓"
    assert value["spend"] is None and value["model"] is None
