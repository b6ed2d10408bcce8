"""Settings: defaults < YAML file (``--config``) < ``STREAMER_*`` environment < CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streamer.errors import ConfigError

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]

ENV_PREFIX = "STREAMER_"


class Settings(BaseSettings):
    """Everything streamer can be told; each field is also ``STREAMER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    source_dsn: str | None = Field(None, description="LiteLLM's database (libpq connection string or URI)")
    state_dsn: str | None = Field(None, description="where state and attributed rows go; default: the source")
    source_schema: Identifier = Field("public", description="schema of the LiteLLM tables")
    slot: Identifier = Field("litellm_attribution", description="logical replication slot name")
    publication: Identifier = Field("litellm_attribution", description="publication name")
    state_schema: Identifier = Field("litellm_attribution", description="schema of streamer's own tables")
    batch_size: int = Field(5000, gt=0, description="attributed rows per sink commit, at most")
    flush_interval: float = Field(0.1, gt=0, description="seconds a handled row may wait for its commit")
    status_interval: float = Field(10.0, gt=0, description="seconds between standby status messages")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: no Kafka sink")
    kafka_client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python", description="producer: kafka-python, or confluent (pip install 'streamer[confluent]')"
    )
    kafka_delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="at_least_once (idempotent producer) or exactly_once (transactions)"
    )
    kafka_spend_topic: str = Field("litellm.spend.attributed", description="one record per spend-log row")
    kafka_key_topic: str = Field("litellm.key.attribution", description="compacted: latest version per key")
    kafka_team_topic: str = Field("litellm.team.attribution", description="compacted: latest version per team")
    kafka_checkpoint_topic: str = Field(
        "litellm.streamer.checkpoints", description="exactly_once: end LSN committed with each transaction"
    )
    kafka_partitions: int = Field(3, gt=0, description="partitions of topics streamer creates")
    kafka_replication_factor: int = Field(1, gt=0, description="replication factor of topics streamer creates")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    kafka_delivery_timeout: float = Field(
        30.0, gt=0, description="seconds a batch may wait for the broker before the sink counts as blocked"
    )
    kafka_transactional_id: str | None = Field(None, description="exactly_once: default streamer-<slot>")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, …")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("source_dsn", "state_dsn")
    @classmethod
    def _parseable(cls, value: str | None) -> str | None:
        if value is not None:
            conninfo_to_dict(value)  # raises ProgrammingError on a malformed string
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    def require_source_dsn(self) -> str:
        if not self.source_dsn:
            raise ConfigError(
                "source_dsn is not set: set STREAMER_SOURCE_DSN (or source_dsn in --config) "
                "to LiteLLM's database, e.g. postgresql://streamer@db/litellm"
            )
        return self.source_dsn

    def require_state_dsn(self) -> str:
        return self.state_dsn or self.require_source_dsn()


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from every layer; a bad value is a ConfigError naming the setting."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    try:
        return FileSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "config"
        raise ConfigError(
            f"invalid setting {name} (STREAMER_{name.upper()}): {error['msg']}"
        ) from None
    except Exception as exc:  # YAML syntax, unreadable file, malformed DSN
        raise ConfigError(f"invalid configuration: {exc}") from None

