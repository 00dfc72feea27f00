# The README's commands. Each creates or reuses .venv (scripts/bootstrap.sh).
#   make demo   trains the default stack: installs what training needs, nothing else
#   make test   installs the test extras and runs the suite
#   make docs   installs the docs extra and builds the site with --strict (as CI does)
#   make kernel-matrix  compiles every Triton kernel configuration for sm_80 and sm_90 (CI; ~2.5 min)
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test kernel-matrix docs setup setup-test setup-docs

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

# --durations: the slowest tests in every log, to keep the suite near 15 minutes on 2 cores.
test: setup-test
	$(VENV)/bin/python -m pytest --durations=20 $(PYTEST_ARGS)

# The full ahead-of-time compile matrix (every dtype, tile size and shape; make test compiles
# each kernel's programs at one size). tests/kernels/test_triton_compile.py has the why.
kernel-matrix: setup-test
	$(VENV)/bin/python -m pytest tests/kernels/test_triton_compile.py --kernel-matrix full -q

docs: setup-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site
