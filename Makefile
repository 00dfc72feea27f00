# The README's commands. Each creates or reuses .venv (scripts/bootstrap.sh).
#   make demo   trains the default stack: installs what training needs, nothing else
#   make test   installs the test extras and runs the suite
#   make docs   installs the docs extra and builds the site with --strict (as CI does)
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test docs setup setup-test setup-docs

# Training dependencies only (torch, Lightning, jsonargparse, einops, matplotlib, pandas, triton).
setup:
	bash scripts/bootstrap.sh ""

setup-test:
	bash scripts/bootstrap.sh test

setup-docs:
	bash scripts/bootstrap.sh docs

# Train the default stack (attention on MQAR) on CPU; prints accuracy, parameters, state size.
demo: setup
	$(VENV)/bin/hybrids fit -c configs/transformer.yaml

test: setup-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

docs: setup-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site
