"""Shared test helpers: where the shared fixtures live (../shared/fixtures, never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_weights import save_tiny_hf_clip  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def fixture_dir(name: str) -> Path:
    """A folder of ../shared/fixtures, or skip the test with a clear reason when it is absent."""
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own sample_data, rendered once per test session, without `trip/` (the time-evidence
    photos, which `make demo`'s scan / gallery / knn steps leave out too: tests/test_sample_trip.py)."""
    from geotag.sample_data import make_sample_data

    folder = tmp_path_factory.mktemp("sample_data")
    make_sample_data(folder, trip=False)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests (and the CLI processes they start) use a cache folder of their own, never ~/.cache."""
    os.environ["GEOTAG_CACHE"] = str(tmp_path_factory.mktemp("geotag-cache"))


def write_tagged_photos(folder: Path, n: int = 24) -> Path:
    """`n` small rendered JPEGs with GPS EXIF spread over the globe: training data for tiny runs."""
    from datetime import datetime

    from geotag.sample_data import Place, make_exif, render

    for i in range(n):
        place = Place(f"P{i}", -60 + (i * 7) % 120, -170 + (i * 37) % 340, f"p{i:03d}.jpg", tagged=True)
        render(place, size=(48, 36)).save(
            folder / place.file, exif=make_exif(place, datetime(2024, 1, 1)).tobytes()
        )
    return folder
