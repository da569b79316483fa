"""Settings: defaults <- TOML <- RECD_* environment, all listed in --help."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from daemon.runtime.cli import _parser
from daemon.runtime.options import kafka_security
from daemon.runtime.settings import ConfigError, Settings, describe, env_name, load_settings


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.events_topic, s.profiles_topic, s.redis_prefix) == ("recd.events", "recd.profiles", "recd:")
    assert s.dlq_topic == "recd.events.dlq"
    assert s.event_weights["purchase"] > s.event_weights["view"] > 0 > s.event_weights["dislike"]


def test_environment_beats_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "recd.toml"
    cfg.write_text('events_topic = "from-toml"\nhistory_len = 7\nsegment_keys = ["a", "b"]\n')
    s = load_settings(cfg, environ={"RECD_HISTORY_LEN": "9", "RECD_EVENT_WEIGHTS": "view=0.5,buy=3"})
    assert s.events_topic == "from-toml"
    assert s.history_len == 9
    assert s.segment_keys == ("a", "b")
    assert dict(s.event_weights) == {"view": 0.5, "buy": 3.0}


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "recd.toml"
    cfg.write_text('[recd]\nconsumer_group = "g7"\n')
    assert load_settings(environ={"RECD_CONFIG": str(cfg)}).consumer_group == "g7"


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.top_k = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.event_weights["view"] = 9  # type: ignore[index]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECD_HISTORY_LEN": "many"}, "RECD_HISTORY_LEN"),
        ({"RECD_HISTORY_LEN": "0"}, "RECD_HISTORY_LEN"),
        ({"RECD_EVENT_WEIGHTS": "view"}, "RECD_EVENT_WEIGHTS"),
        ({"RECD_TOP_K": "-1"}, "RECD_TOP_K"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "recd.toml"
    cfg.write_text("histroy_len = 3\n")
    with pytest.raises(ConfigError, match="histroy_len"):
        load_settings(cfg, environ={})


def test_help_lists_every_setting() -> None:
    text = _parser().format_help()
    for f in dataclasses.fields(Settings):
        assert env_name(f.name) in text
        assert env_name(f.name) in describe()


def test_kafka_security_passthrough() -> None:
    s = load_settings(
        environ={
            "RECD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RECD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "RECD_KAFKA_SASL_USERNAME": "svc",
            "RECD_KAFKA_SASL_PASSWORD": "pw",
            "RECD_KAFKA_SSL_CAFILE": "/ca.pem",
        }
    )
    assert kafka_security(s) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
        "ssl_cafile": "/ca.pem",
    }


# build_trainer checks the prefix's key layout in Redis before it builds the model; the parameters are the same on
# any Redis, so the single one is enough (``prefix``: the test's own, emptied afterwards).
@pytest.mark.single_redis
def test_model_params_override_the_preset_and_bad_ones_fail_at_start(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from daemon.runtime.app import build_trainer
    from daemon.runtime.metrics import Metrics

    env = {"RECD_MODEL_PARAMS": "dim=128,unobserved=0.004", "RECD_MODEL_DIR": str(tmp_path / "models")}
    redis = {"redis_url": redis_url, "redis_prefix": prefix}
    loaded = load_settings(environ=env, **redis)
    assert dict(loaded.model_params) == {"dim": 128.0, "unobserved": 0.004}
    model: Any = build_trainer(loaded, Metrics(CollectorRegistry())).new_model()
    assert model.config.dim == 128 and isinstance(model.config.dim, int) and model.config.unobserved == 0.004
    bad = load_settings(environ={**env, "RECD_MODEL_PARAMS": "dimension=128"}, **redis)
    with pytest.raises(ConfigError, match=r"RECD_MODEL_PARAMS.*dimension"):
        build_trainer(bad, Metrics(CollectorRegistry()))
    with pytest.raises(ConfigError, match="RECD_MODEL_PARAMS"):
        load_settings(environ={"RECD_MODEL_PARAMS": "dim=big"})
