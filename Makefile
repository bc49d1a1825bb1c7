# Two entry points that work on a fresh machine with only Python 3:
#   make demo   trains a small LSTM on a synthetic task on CPU
#   make test   runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-next gpu-check notebooks lint format clean

# $(call make_venv,PYTHON,DIR,EXTRA_PINS): DIR as a virtual environment with jrnn[test,demo].
define make_venv
$(1) -m venv $(2)
$(2)/bin/python -m pip install --quiet --upgrade pip
$(2)/bin/python -m pip install --quiet -e '.[test,demo]' $(3)
touch $(2)/.installed
endef

# $(call run_tests,DIR): the suite in DIR's Python. pytest exits 5 when it collects no test; that
# is not a failure of the code under test. The 15 slowest tests are listed at the end, to keep an
# eye on CI's 15-minute budget (the suite took 14 of them before tests/conftest.py's XLA flag).
run_tests = JAX_PLATFORMS=cpu KERAS_BACKEND=jax $(1)/bin/python -m pytest -n 2 -q --durations=15 $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

$(STAMP): pyproject.toml
	$(call make_venv,$(PYTHON),$(VENV))

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python examples/demo.py

test: $(STAMP)
	$(call run_tests,$(VENV))

# The suite on the device image's JAX (0.11.2), which needs Python >= 3.12; CI and `make test` get
# 0.10.2, the newest for Python 3.11. 0.11's Mosaic GPU interpreter also runs the CTAs of a
# thread-block cluster concurrently, with cluster barriers. Where python3.12 is not on the PATH:
#   make test-next PYTHON_NEXT=/path/to/python3.12 PYTEST_ARGS=tests/test_pallas.py
# On fewer than 8 CPUs the cluster kernels' interpreter tests skip (they can deadlock there, see
# tests/test_pallas.py); alone, in one process, they run with
#   JRNN_TEST_CLUSTERS=1 make test-next PYTEST_ARGS='-n 0 -k clusters tests/test_pallas.py'
PYTHON_NEXT ?= python3.12
JAX_NEXT ?= 0.11.2
NEXT := .venv-next

$(NEXT)/.installed: pyproject.toml
	$(call make_venv,$(PYTHON_NEXT),$(NEXT),'jax==$(JAX_NEXT)' 'jaxlib==$(JAX_NEXT)')

test-next: $(NEXT)/.installed
	$(call run_tests,$(NEXT))

# On an NVIDIA Hopper machine whose python3 already has JAX with CUDA and Flax (no venv, no network
# needed): the Pallas kernels compiled there, against the scan. Then bench/gpu.py, in parts (--only);
# bench/gpu_lease.sh runs both in stages of under 10 minutes each.
gpu-check:
	PYTHONPATH=. $(PYTHON) -m pytest -q -m gpu tests/test_pallas.py

notebooks: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[notebooks]'
	JAX_PLATFORMS=cpu $(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(NEXT) build *.egg-info
