# Two entry points that work on a fresh machine with only Python 3:
#   make demo   trains a small LSTM on a synthetic task on CPU
#   make test   runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-next gpu-check notebooks lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python examples/demo.py

# pytest exits 5 when it collects no test; that is not a failure of the code under test.
test: $(STAMP)
	JAX_PLATFORMS=cpu KERAS_BACKEND=jax $(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# The suite on the device image's JAX (0.11.2), which needs Python >= 3.12; CI and `make test` get
# 0.10.2, the newest for Python 3.11. 0.11's Mosaic GPU interpreter also runs the CTAs of a
# thread-block cluster concurrently, with cluster barriers. Where python3.12 is not on the PATH:
#   make test-next PYTHON_NEXT=/path/to/python3.12 PYTEST_ARGS=tests/test_pallas.py
PYTHON_NEXT ?= python3.12
JAX_NEXT ?= 0.11.2
NEXT := .venv-next

$(NEXT)/.installed: pyproject.toml
	$(PYTHON_NEXT) -m venv $(NEXT)
	$(NEXT)/bin/python -m pip install --quiet --upgrade pip
	$(NEXT)/bin/python -m pip install --quiet -e '.[test,demo]' 'jax==$(JAX_NEXT)' 'jaxlib==$(JAX_NEXT)'
	touch $@

test-next: $(NEXT)/.installed
	JAX_PLATFORMS=cpu KERAS_BACKEND=jax $(NEXT)/bin/python -m pytest -n 2 -q $(PYTEST_ARGS)

# On an NVIDIA Hopper machine whose python3 already has JAX with CUDA and Flax (no venv, no network
# needed): the Pallas kernels compiled there, against the scan. Then bench/gpu.py, in parts (--only).
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
