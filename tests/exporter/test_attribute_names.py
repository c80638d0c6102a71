"""Attribute names in the SQL and the dashboards come from one list, checked when they are rendered.

The views and expressions name attributes as ``${attr:NAME}``; grafana/build.py through
``quoted_name``. These tests hold every attribute literal llmledger ships — rendered views,
queries, dashboards, alert rules, row policies — to that list, and show that a typo fails.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from llmledger.exporter._internal.attribute_names import (
    KNOWN_NAMES,
    OTHER_INSTRUMENTATIONS,
    quoted_name,
    render_attribute_names,
)
from llmledger.exporter._internal.migrations import shared_sql
from llmledger.exporter._internal.tenant_access import TENANT_TABLES
from llmledger.instrumentation.attributes import METRIC_NAMES, SPAN_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = resources.files("llmledger.exporter._internal").joinpath("schema")
# A map read by key: SpanAttributes['x.y'], ResourceAttributes[...], Attributes[...], or the
# views' short alias a[...].
_KEYED = re.compile(r"\b(?:a|SpanAttributes|ResourceAttributes|Attributes)\['([^']+)'\]")
_RAW_KEY = re.compile(r"\b(?:a|SpanAttributes|ResourceAttributes|Attributes)\['")


def _shipped_sql() -> dict[str, str]:
    texts = {f"rendered {name}": sql for name, sql in shared_sql("llmledger").items()}
    for path in sorted(
        (ROOT / "exporter" / "src" / "llmledger" / "exporter" / "_internal" / "queries").glob("*.sql")
    ):
        texts[path.name] = path.read_text()
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        texts[path.name] = path.read_text()
    for path in sorted((ROOT / "grafana" / "provisioning" / "alerting").glob("*.yaml")):
        texts[path.name] = path.read_text()
    texts["tenant_access.py"] = "\n".join(TENANT_TABLES.values())
    return texts


def test_every_attribute_literal_shipped_is_in_the_list() -> None:
    read = {
        (where, name)
        for where, text in _shipped_sql().items()
        for name in _KEYED.findall(text)
        if "." in name
    }
    assert len(read) > 60  # the views read dozens; an empty scan proves nothing
    assert {(where, name) for where, name in read if name not in KNOWN_NAMES} == set()


def test_the_views_and_expressions_name_attributes_only_through_the_list() -> None:
    for folder in ("views", "expressions"):
        for entry in SCHEMA.joinpath(folder).iterdir():
            if entry.name.endswith(".sql"):
                assert not _RAW_KEY.search(entry.read_text()), (
                    f"schema/{folder}/{entry.name}: use ${{attr:NAME}}"
                )


def test_the_list_is_llmledgers_contract_and_the_names_others_write() -> None:
    assert {"gen_ai.usage.input_tokens", "tenant.id", "llmledger.fallback.attempt"} <= SPAN_ATTRIBUTES
    assert "gen_ai.client.operation.duration" in METRIC_NAMES
    assert not SPAN_ATTRIBUTES & OTHER_INSTRUMENTATIONS  # each name has one home
    assert KNOWN_NAMES == SPAN_ATTRIBUTES | METRIC_NAMES | OTHER_INSTRUMENTATIONS


def test_a_reference_renders_to_its_literal() -> None:
    sql = "toUInt64OrNull(a[${attr:gen_ai.usage.input_tokens}]) AS input_tokens"
    assert (
        render_attribute_names(sql, "x.sql")
        == "toUInt64OrNull(a['gen_ai.usage.input_tokens']) AS input_tokens"
    )
    assert quoted_name("gen_ai.request.model") == "'gen_ai.request.model'"


@pytest.mark.parametrize("typo", ["gen_ai.usage.input_token", "tenant_id", "", "x']; DROP TABLE t; --"])
def test_a_name_not_in_the_list_fails_the_render(typo: str) -> None:
    with pytest.raises(
        ValueError, match=r"schema/views/llm_calls.sql: .* is not an attribute or metric name"
    ):
        render_attribute_names(f"a[${{attr:{typo}}}]", "schema/views/llm_calls.sql")
    with pytest.raises(ValueError, match="not an attribute or metric name"):
        quoted_name(typo)
