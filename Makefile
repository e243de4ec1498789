# The two commands: `make demo` runs the whole pipeline locally on generated data;
# `make test` runs the test suite. Both install what they need on first use.
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
SERIES ?= 100

# The layers' pinned requirements constrain the development environment: tests run what ships.
LAYER_PINS := layers/core/requirements.txt layers/dataframe/requirements.txt

$(VENV)/.installed: pyproject.toml $(LAYER_PINS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]' $(foreach f,$(LAYER_PINS),-c $(f))
	touch $@

# SAM CLI and checkov pin their own boto/botocore ranges: kept out of the project's venv.
$(TOOLS)/.installed:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet aws-sam-cli checkov
	touch $@

.PHONY: install demo test lint
install: $(VENV)/.installed $(TOOLS)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/m5flow synth --series $(SERIES) --out demo/data --force
	$(VENV)/bin/m5flow local run --data demo/data --out demo/out

test: $(VENV)/.installed $(TOOLS)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" M5FLOW_TOOLS_BIN="$(CURDIR)/$(TOOLS)/bin" $(VENV)/bin/pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	for handler in functions/*/app.py; do $(VENV)/bin/mypy $$handler || exit 1; done
