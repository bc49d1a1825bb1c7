# Two entry points that work on a fresh machine with only Python 3:
#   make demo   trains a small LSTM on a synthetic task on CPU
#   make test   runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test gpu-check notebooks lint format clean

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
	rm -rf $(VENV) build *.egg-info
