# Two commands do all set-up: `make demo` and `make test`. Both create .venv from
# requirements.txt when it is missing (or older than requirements.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-mano test test-slow test-all bench asset clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The main job: synthetic data, oracle priors, stage 1, stage 2, evaluation.
demo: $(STAMP)
	$(PY) -m a2p_jax.demo --out demo_out

# MANO only: meshes, a picture, the forward timing (a few seconds).
demo-mano: $(STAMP)
	$(PY) -m mano_jax.demo --out demo_mano_out

# Two pytest workers, each taking whole test files (module fixtures are built
# once); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Slow tests only (excluded from `make test`).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) benchmarks/mano_speed.py

# Regenerates mano_jax/assets/procedural_hand_{right,left}.npz (deterministic).
asset: $(STAMP)
	$(PY) -m mano_jax.procedural --out mano_jax/assets

clean:
	rm -rf demo_out demo_mano_out .pytest_cache
