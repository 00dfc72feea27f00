# The two commands of the README. Each creates or reuses .venv (scripts/bootstrap.sh).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test setup

setup:
	bash scripts/bootstrap.sh test

# Train the default stack (attention on MQAR) on CPU; prints accuracy, parameters, state size.
demo: setup
	$(VENV)/bin/hybrids fit -c configs/transformer.yaml

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
