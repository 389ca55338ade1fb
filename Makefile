# The commands that matter: `make run` (installs, migrates, starts the API and a worker on the embedded
# defaults) and `make test` (installs, then runs the whole suite). `make bench` runs the benchmarks.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run test bench bench-service bench-prune bench-distill bench-quantize bench-auto bench-sandbox bench-measure bench-zoo bench-scale bench-web clean

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so no later package can pull a different build
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	# the SDK and `squeeze` CLI: their own package (client/), installable alone with httpx + tqdm
	$(PY) -m pip install -q -e ./client
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m app.serve --host $(HOST) --port $(PORT)

# axe-core for the browser test's accessibility scan (tests/js, from the npm registry, pinned by its lock)
AXE := tests/js/node_modules/axe-core/axe.min.js
$(AXE): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $(AXE)

test: install $(AXE)
	$(PY) -m pytest -q -ra tests

bench: install
	$(PY) bench/engine.py

bench-measure: install
	$(PY) bench/measure.py

bench-scale: install
	$(PY) bench/scale.py

bench-web: install $(AXE)
	$(PY) bench/web_audit.py

bench-zoo: install
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) bench/zoo.py --table bench/out/zoo.md

bench-prune: install
	$(PY) bench/prune.py

bench-distill: install
	$(PY) bench/distill.py

bench-quantize: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/quantize.py

bench-auto: install
	$(PY) bench/auto.py

bench-sandbox: install
	$(PY) bench/sandbox.py

bench-service: install
	$(PY) bench/service.py

clean:
	rm -rf $(VENV) out bench/out var
