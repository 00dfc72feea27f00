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

# Two workers (pytest-xdist, in the test extra): the suite is mostly single-threaded Python and
# subprocess start-up (each Lightning import also imports transformers through torchmetrics once
# the [hf] extra is in), so two workers on two cores halve its wall time.
PYTEST_WORKERS ?= 2

test: setup-test
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

docs: setup-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site
