"""The standard test sets and the published results of the seed systems on them, as data (test_sets.json).

Each `TestSet` pins what a folder must hold: the image count and, where we could compute it from a
public id list, the sha256 of the sorted ids (`geotag.io.truth.ids_sha256`; an id is the file name
without its extension). Users do get wrong copies (one had a YFCC4k folder of the wrong size), so
`geotag benchmark` checks the folder against this before any model runs.

Published numbers are accuracies in percent at 1 / 25 / 200 / 750 / 2500 km, copied from the paper
named in `source` and cross-checked against at least one independent copy (`checked`). Only rows we
could cross-check are here; a number we could not confirm is left out rather than guessed. The papers
differ in Earth radius and in < versus <= (GUIDE section 6), so a gap of a few tenths is noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from geotag.errors import InputError

THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)


@dataclass(frozen=True)
class Published:
    """One system's published result on one test set."""

    system: str
    acc: tuple[float | None, ...]  # percent at THRESHOLDS_KM; None where not reported
    source: str  # paper and table the numbers come from
    checked: str  # where they were confirmed
    median_km: float | None = None
    geoscore: float | None = None
    note: str = ""


@dataclass(frozen=True)
class TestSet:
    """What a benchmark folder must hold, and how its manifest looks."""

    name: str
    title: str
    n_images: int
    count_source: str
    manifest_format: str  # places365 | osv5m | plain (geotag.io.truth.FORMATS)
    manifest_names: tuple[str, ...]  # file names looked for in DIR and its parent when --truth is not given
    ids_sha256: str | None = None  # None: the id list is not pinned yet; only the count is checked
    ids_source: str = ""
    published: tuple[Published, ...] = field(default_factory=tuple)
    notes: str = ""
    known_extra: int = 0  # files that standard copies hold beyond the manifest: accepted with a warning


TEST_SETS_FILE = Path(__file__).with_name("test_sets.json")


def load_test_sets(file: Path = TEST_SETS_FILE) -> dict[str, TestSet]:
    """The test-set table (test_sets.json beside this module; lists become tuples)."""
    table = json.loads(file.read_text(encoding="utf-8"))
    return {
        name: TestSet(
            **{
                **entry,
                "name": name,
                "manifest_names": tuple(entry["manifest_names"]),
                "published": tuple(
                    Published(**{**p, "acc": tuple(p["acc"])}) for p in entry.get("published", ())
                ),
            }
        )
        for name, entry in table.items()
    }


TEST_SETS: dict[str, TestSet] = load_test_sets()


def get_test_set(name: str) -> TestSet:
    """The description of a known test set; an unknown name is an input error listing the known ones."""
    key = name.strip().lower()
    if key not in TEST_SETS:
        raise InputError(f"unknown test set {name!r}; known: {', '.join(TEST_SETS)}")
    return TEST_SETS[key]
