# The commands that matter: `make run` (installs, migrates, starts the API and a worker on the embedded
# defaults) and `make test` (installs, then runs the whole suite). `make bench` runs the benchmarks.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install system-run system-test run test bench bench-service bench-prune bench-distill bench-quantize bench-auto bench-sandbox bench-measure bench-zoo bench-peers bench-lm bench-scale bench-web bench-reads clean

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

# System packages, as `command:package` pairs: installed with apt when this runs as root on Debian/Ubuntu,
# otherwise the target stops at once and prints the exact command to run.
# (g++: inductor compiles its int8 CPU kernels as C++, in the sandbox, with the system's compiler)
RUN_NEEDS  := bwrap:bubblewrap g++:g++
TEST_NEEDS := bwrap:bubblewrap g++:g++ chromium:chromium npm:npm
define ensure_system
	@missing=""; for pair in $(1); do command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing system packages:$$missing. Install them, then run make again:" >&2; \
	    echo "  sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi
endef

system-run:
	$(call ensure_system,$(RUN_NEEDS))

system-test:
	$(call ensure_system,$(TEST_NEEDS))

run: system-run install
	$(PY) -m app.serve --host $(HOST) --port $(PORT)

# axe-core for the browser test's accessibility scan (tests/js, from the npm registry, pinned by its lock)
AXE := tests/js/node_modules/axe-core/axe.min.js
$(AXE): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $(AXE)

# the suite in two parts: everything independent in parallel processes (each with its own database, Redis dbs
# and service stacks), then, alone, the tests that restart shared services or judge timing (marked exclusive).
# One process per core and one more (a test waiting on a service stack leaves its core to another), each with
# its share of the cores as threads, at least one (tests/stack.py threads_per_process): the suite is CPU-bound,
# and oversubscribed threads spin. Measured on a 2-core EPYC, the parallel part: 923 s with 2 processes, 866 s
# with 3, 926 s with 4. At most 5 processes (Redis has 16 dbs, 3 each)
TEST_PROCS ?= $(shell python3 -c "import os; print(min(5, len(os.sched_getaffinity(0)) + 1))")
test: system-test install $(AXE)
	$(PY) -m pytest -q -ra -n $(TEST_PROCS) --dist loadfile -m "not exclusive" tests
	$(PY) -m pytest -q -ra -m exclusive tests

bench: install
	$(PY) bench/engine.py

bench-measure: install
	$(PY) bench/measure.py

bench-scale: install
	$(PY) bench/scale.py

bench-reads: install
	$(PY) bench/reads.py

bench-web: install $(AXE)
	$(PY) bench/web_audit.py

bench-zoo: install
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) bench/zoo.py --table bench/out/zoo.md

bench-peers: install
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) bench/peers.py --table bench/out/peers.md

bench-lm: install
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) bench/lm.py

bench-prune: install
	$(PY) bench/prune.py

bench-distill: install
	$(PY) bench/distill.py

bench-quantize: install
	$(PY) bench/quantize.py

bench-auto: install
	$(PY) bench/auto.py

bench-sandbox: install
	$(PY) bench/sandbox.py

bench-service: install
	$(PY) bench/service.py

clean:
	rm -rf $(VENV) out bench/out var
