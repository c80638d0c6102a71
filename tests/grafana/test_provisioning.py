"""Provisioning files and the deploy stack, validated against their schemas and each other.

Grafana publishes no JSON Schema for provisioning files; ours (``schemas/``) are written
from its documentation and the ClickHouse plugin's settings type. The compose file is
checked against the Compose Specification's schema (as vendored by check-jsonschema), the
OpenTelemetry Collector's exporter settings against the keys that exporter accepts.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.validators import validator_for

from tests.grafana.conftest import DASHBOARDS, GRAFANA, ROOT

SCHEMAS = Path(__file__).parent / "schemas"
DEPLOY = ROOT / "deploy"
PROVISIONING = GRAFANA / "provisioning"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def _validate(document: Any, schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("folder", "schema"),
    [
        ("datasources", "grafana-datasources.schema.json"),
        ("dashboards", "grafana-dashboard-providers.schema.json"),
        ("alerting", "grafana-alert-rules.schema.json"),
    ],
)
def test_provisioning_files_match_their_schema(folder: str, schema: str) -> None:
    files = sorted((PROVISIONING / folder).glob("*.yaml"))
    assert files
    for path in files:
        _validate(_yaml(path), _schema(schema))


def test_schemas_reject_what_grafana_would() -> None:
    datasource = _yaml(PROVISIONING / "datasources" / "clickhouse.yaml")
    datasource["datasources"][0]["jsonData"]["protocol"] = "grpc"
    with pytest.raises(AssertionError, match="protocol"):
        _validate(datasource, _schema("grafana-datasources.schema.json"))


def test_the_datasource_is_the_one_dashboards_and_alerts_name() -> None:
    (datasource,) = _yaml(PROVISIONING / "datasources" / "clickhouse.yaml")["datasources"]
    assert datasource["type"] == "grafana-clickhouse-datasource"
    assert datasource["uid"] == "llmledger-clickhouse"
    assert datasource["jsonData"]["protocol"] == "native"
    assert datasource["jsonData"]["traces"]["defaultTable"] == "otel_traces"
    # Secrets come from the environment, never from the file.
    assert datasource["secureJsonData"]["password"].startswith("${")
    for dashboard in DASHBOARDS.values():
        (ds_var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
        assert ds_var["current"]["value"] == datasource["uid"]


def _compose() -> dict[str, Any]:
    return _yaml(DEPLOY / "compose.yaml")


def test_compose_file_matches_the_compose_specification() -> None:
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(schema_text)
    validator_class = validator_for(schema)
    errors = list(validator_class(schema).iter_errors(_compose()))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_stack_wiring() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"clickhouse", "schema", "collector", "example-app", "grafana", "otelcol"} <= set(services)
    # The schema is applied once, before anything writes or reads.
    assert services["schema"]["command"] == ["llmledger", "schema", "apply"]
    for name in ("collector", "grafana", "otelcol"):
        assert services[name]["depends_on"]["schema"]["condition"] == "service_completed_successfully"
    collector = services["collector"]
    assert collector["command"] == ["llmledger", "collector"]
    url = collector["environment"]["LLMLEDGER_CLICKHOUSE_URL"]
    assert re.match(r"http://.+@clickhouse:8123/llmledger$", url)
    assert services["schema"]["environment"]["LLMLEDGER_CLICKHOUSE_URL"] == url
    assert collector["environment"]["LLMLEDGER_COLLECTOR_APPLY_SCHEMA"] == "false"
    for build_service in ("schema", "example-app"):
        dockerfile = DEPLOY.parent / services[build_service]["build"]["dockerfile"]
        assert dockerfile.is_file()
        assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()
    assert services["collector"]["image"] == services["schema"]["image"]
    # The example app exports OTLP to the collector, under opentelemetry-instrument.
    app_env = services["example-app"]["environment"]
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert "opentelemetry-instrument" in (DEPLOY / "example-app" / "Dockerfile").read_text()
    # Grafana gets the plugin and every provisioning folder, and the dashboards where the provider looks.
    grafana = services["grafana"]
    assert grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"] == "grafana-clickhouse-datasource"
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"] if m.startswith("../")}
    for folder in ("datasources", "dashboards", "alerting"):
        assert mounts[f"../grafana/provisioning/{folder}"] == f"/etc/grafana/provisioning/{folder}"
    (provider,) = _yaml(PROVISIONING / "dashboards" / "llmledger.yaml")["providers"]
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    # Every variable the datasource file reads is set on the Grafana service.
    datasource_text = (PROVISIONING / "datasources" / "clickhouse.yaml").read_text()
    for var in set(re.findall(r"\$\{(\w+)\}", datasource_text)):
        assert var in grafana["environment"], var
    # Every mounted file exists.
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source


def test_clickhouse_config_files_are_well_formed_xml() -> None:
    import xml.etree.ElementTree as ET

    for path in (DEPLOY / "clickhouse").rglob("*.xml"):
        root = ET.parse(path).getroot()
        assert root.tag == "clickhouse"
    users = ET.parse(DEPLOY / "clickhouse" / "users.d" / "grafana.xml").getroot()
    assert users.findtext("profiles/grafana/readonly") == "2"
    assert users.find("users/grafana/password").get("from_env") == "LLMLEDGER_GRAFANA_PASSWORD"  # type: ignore[union-attr]


def test_opentelemetry_collector_writes_into_llmledger_schema() -> None:
    config = _yaml(DEPLOY / "otel-collector" / "config.yaml")
    exporter = config["exporters"]["clickhouse"]
    _validate(exporter, _schema("otelcol-clickhouse-exporter.schema.json"))
    assert exporter["create_schema"] is False
    assert exporter["database"] == "llmledger"
    assert exporter["traces_table_name"] == "otel_traces"
    assert exporter["logs_table_name"] == "otel_logs"
    assert {kind: table["name"] for kind, table in exporter["metrics_tables"].items()} == {
        kind: f"otel_metrics_{kind}"
        for kind in ("gauge", "sum", "summary", "histogram", "exponential_histogram")
    }
    assert set(config["service"]["pipelines"]) == {"traces", "metrics", "logs"}
    for pipeline in config["service"]["pipelines"].values():
        assert pipeline["exporters"] == ["clickhouse"]
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"{kind}.{name} used but not defined"
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_opentelemetry_collector_never_gives_up_on_what_it_accepted() -> None:
    config = _yaml(DEPLOY / "otel-collector" / "config.yaml")
    exporter = config["exporters"]["clickhouse"]
    # The sending queue is on disk (file_storage), so a restart keeps it ...
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    storage = queue["storage"]
    assert storage.split("/")[0] == "file_storage"
    assert storage in config["extensions"]
    assert storage in config["service"]["extensions"]
    assert config["extensions"][storage]["directory"]
    # ... bounded (a full queue refuses, retryably, instead of growing without end) ...
    assert queue["queue_size"] > 0
    assert queue["block_on_overflow"] is False
    # ... and retried without an elapsed-time limit.
    retry = exporter["retry_on_failure"]
    assert retry["enabled"] is True
    assert retry["max_elapsed_time"] in (0, "0", "0s")
    # No batch processor before the queue: its memory would be lost in a crash.
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["exporters"] == ["clickhouse"], name
        assert "batch" not in pipeline["processors"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{name}: {kind}.{component} used but not defined"
    assert exporter["logs_table_name"] == "otel_logs"
    tables = {kind: table["name"] for kind, table in exporter["metrics_tables"].items()}
    assert tables == {
        kind: f"otel_metrics_{kind}"
        for kind in ("gauge", "sum", "summary", "histogram", "exponential_histogram")
    }
    # The queue's directory is a volume of its own in the compose stack, owned by the collector's user.
    services = _yaml(DEPLOY / "compose.yaml")["services"]
    directory = config["extensions"][storage]["directory"]
    (volume,) = [m.split(":")[0] for m in services["otelcol"]["volumes"] if m.split(":")[1] == directory]
    owner = services["otelcol-queue-owner"]
    assert f"{volume}:{directory}" in owner["volumes"]
    assert (
        services["otelcol"]["depends_on"]["otelcol-queue-owner"]["condition"]
        == "service_completed_successfully"
    )


def test_no_registry_host_is_named_in_the_deploy_files() -> None:
    for path in list(DEPLOY.rglob("*")) + list(PROVISIONING.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8").lower()
            assert "index-url" not in text, path
            assert "pypi" not in text, path
