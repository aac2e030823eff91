# sendtime: the two commands that matter are `make demo` (set up + run the main job end to end)
# and `make test` (set up + run the default test suite). Everything installs into .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= out
USERS ?= 5000
DAYS ?= 90
AS_OF ?= 2026-04-13
PORT ?= 3000
export SENDTIME_HOME ?= $(CURDIR)/.sendtime
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := 1

.PHONY: setup demo test test-slow bench bench-events bench-heavy load bench-scale bench-nightly bench-nightly-10m bench-train bench-slots suite serve sample-request lock clean audit docs

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/sendtime simulate --users $(USERS) --days $(DAYS) --end $(AS_OF) --seed 1 --out $(OUT)/world
	$(BIN)/sendtime nightly --events $(OUT)/world/events.parquet --users $(OUT)/world/users.parquet --as-of $(AS_OF)
	$(BIN)/sendtime predict --date $(AS_OF) --out $(OUT)/predictions.parquet
	$(BIN)/sendtime evaluate --world $(OUT)/world --predictions $(OUT)/predictions.parquet --log-run
	@echo
	@echo "Start the API:      make serve            (http://127.0.0.1:$(PORT), docs at /docs)"
	@echo "Then, elsewhere:    make sample-request"

# one pytest worker per core (pytest-xdist); a test module's tests stay on one worker, so its
# module fixtures (a Spark session, a private copy of the trained state) are built once
TEST_WORKERS ?= auto
test: setup
	$(BIN)/bandit -q -r sendtime -ll
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test-slow: setup
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadscope

bench: setup
	$(BIN)/python -m bench.serving

load: setup
	$(BIN)/python -m bench.load

bench-events: setup  ## POST /events: 1,000-event batches on a real server, 1 and 2 workers, vs the straightforward intake
	$(BIN)/python -m bench.events

bench-heavy: setup  ## single-user latency beside 10,000-user requests and plans, 1 worker, vs BentoML's one thread per worker
	$(BIN)/python -m bench.heavy_light

bench-scale: setup  ## feature build, DuckDB engine vs pandas, 1M and 10M events (SIZES="1e6 1e7 1e8" for 100M, REPEAT=3 for the spread)
	$(BIN)/python -m bench.scale --sizes $(or $(SIZES),1e6 1e7) --repeat $(or $(REPEAT),1)

bench-nightly: setup  ## the whole nightly run on a generated 50M-event, 1.28M-user history
	$(BIN)/python -m bench.nightly_scale --events $(or $(EVENTS),5e7)

bench-nightly-10m: setup  ## the nightly run for 10M users (about 200M events over 48 days; 1M simulated, the rest copies)
	$(BIN)/python -m bench.nightly_scale --users 1e7 --days 48 --distinct 1e6

bench-train: setup  ## forest fit time and validation metrics by training-sample size
	$(BIN)/python -m bench.train_sample

bench-slots: setup  ## scoring the 168-slot table: predict_proba vs the compiled slot traversal, same rows, one run
	$(BIN)/python -m bench.slot_scoring

suite: setup
	$(BIN)/sendtime suite --users 20000 --days 180 --seeds 0,1 --out reports

serve: setup
	$(BIN)/sendtime serve --host 127.0.0.1 --port $(PORT)

sample-request:
	curl -s -X POST http://127.0.0.1:$(PORT)/best_send_time -H 'content-type: application/json' \
	  -d '{"users": [{"user_id": "u000001"}, {"user_id": "someone-new", "timezone": "Europe/Berlin"}], "window_start": "$(AS_OF)T06:00:00Z", "window_end": "$(AS_OF)T22:00:00Z"}'
	@echo

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^sendtime' > requirements.lock

clean:
	rm -rf $(OUT) .sendtime .pytest_cache site

audit: $(STAMP)  ## dependency audit with pip-audit (needs pypi.org or osv.dev; not reachable from this machine's CI)
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit -r requirements.lock --strict

docs: setup  ## the documentation site (mkdocs-material, --strict) into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q
