# Two commands: `make train` (quickstart on the bundled digits) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/quickstart

.PHONY: train train-video test install benchmark clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) main.py --config=configs/quickstart.py --workdir=$(WORKDIR)

# The video quickstart: ViViT + TokenLearner on the bundled moving-digits clips (written once on first use).
train-video: $(VENV)/.installed
	$(PY) main.py --config=configs/quickstart_video.py --workdir=runs/quickstart_video

# Two pytest workers, each test file on one of them: most tests compile XLA programs on one thread.
test: $(VENV)/.installed-test
	$(PY) -m pytest -q --durations=15 -n 2 --dist=loadfile tests

benchmark: $(VENV)/.installed
	$(PY) experiments/benchmark_tokenlearner.py

clean:
	rm -rf runs .pytest_cache
