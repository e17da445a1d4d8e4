"""The example config is valid and documents every key."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from etcdguard.config import LocalStoreConfig, S3StoreConfig, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "etcdguard.example.yaml"


def _keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE, {}, environ={})
    assert isinstance(settings.store, S3StoreConfig)


def test_example_config_documents_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for section, field in Settings.model_fields.items():
        assert section in data, section
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing = _keys(annotation) - set(data[section])
            assert not missing, (section, missing)
    store_keys = _keys(S3StoreConfig) | _keys(LocalStoreConfig)
    assert all(f"{k}:" in text for k in store_keys)
