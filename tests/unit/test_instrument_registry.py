"""instrument() finds integrations through its registry, never by a name in the core."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from tcc_plugin import instrument
from tcc_plugin.instrument import ENTRY_POINT_GROUP, register_integration


def test_installed_integrations_are_entry_points() -> None:
    points = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    assert points == {
        "openai": "tcc_plugin.integrations.openai:instrument",
        "anthropic": "tcc_plugin.integrations.anthropic:instrument",
        "langchain_openai": "tcc_plugin.integrations.openai:instrument",
    }


def test_a_registered_integration_receives_its_clients() -> None:
    seen: list[tuple[object, dict[str, Any]]] = []

    def instrument_acme(client: object, **options: Any) -> object:
        seen.append((client, options))
        return client

    acme_client = type("Client", (), {"__module__": "acme_llm.client"})()
    register_integration("acme_llm", instrument_acme)
    assert instrument(acme_client, thinking="low") is acme_client
    assert seen == [
        (
            acme_client,
            {"price_book": None, "retry": None, "thinking": "low", "provider_spans": False},
        )
    ]


def test_an_unknown_client_is_refused_with_the_supported_ones() -> None:
    stranger = type("Stranger", (), {"__module__": "nobody_knows.client"})()
    with pytest.raises(TypeError, match=r"openai\.OpenAI.*Stranger.*llm_call"):
        instrument(stranger)
