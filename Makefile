# geotag — the two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes first and pinned so pip takes the release this machine keeps on disk (see README).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo lint sample-data clean

$(BIN)/geotag: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/geotag

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check geotag tests bench
	$(BIN)/ruff format --check geotag tests bench

sample-data: install
	$(BIN)/python -m geotag.sample_data sample_data

# sample_data holds broken files on purpose, so scan and predict exit 1 (some files failed); 2 would stop the demo.
demo: install sample-data
	@mkdir -p out
	$(BIN)/geotag scan sample_data --out out/demo-scan.parquet || [ $$? -eq 1 ]
	$(BIN)/geotag predict sample_data --out out/demo-preds.parquet --untrained-backbone || [ $$? -eq 1 ]
	$(BIN)/geotag eval out/demo-preds.parquet
	$(BIN)/geotag eval out/demo-preds.parquet --by folder --format markdown

clean:
	rm -rf out .pytest_cache .ruff_cache
