"""The standard test sets and the published results of the seed systems on them, as data.

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

from dataclasses import dataclass, field

from geotag.errors import InputError

THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)

SURVEY = (
    "the 'Awesome Worldwide Image Geolocalization' performance tables accompanying the survey "
    "'Worldwide Image Geolocalization in the Foundation Model Era' (preprints.org 202608.1749)"
)


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


TRANSLOCATOR = (
    "Pramanick et al., 'Where in the World is this Image?' (TransLocator), ECCV 2022, main results table"
)
GEODECODER = (
    "Clark et al., 'Where We Are and What We're Looking At' (GeoDecoder), CVPR 2023, main results table"
)
GEOCLIP = "Vivanco Cepeda et al., GeoCLIP, NeurIPS 2023, Table 1"
PIGEOTTO = "Haas et al., PIGEON (PIGEOTTO model), CVPR 2024, benchmark results table"
ISNS = "Mueller-Budack et al., ECCV 2018, ISNs (M, f*, S3)"
UCLA = "UCLAdeepvision/CS163-Projects-2025Fall (a survey post reproducing TransLocator's table)"

TEST_SETS: dict[str, TestSet] = {
    "im2gps": TestSet(
        name="im2gps",
        title="Im2GPS (Hays & Efros, CVPR 2008)",
        n_images=237,
        count_source="rows of meta/im2gps_places365.csv in TIBHannover/GeoEstimation (commit 5e091c0)",
        manifest_format="places365",
        manifest_names=("im2gps_places365.csv",),
        ids_sha256="b7db04b47224bba019e5bbb0e360618253f411e2c9ad8ac102dbd50dcb4b2a7e",
        ids_source="IMG_ID column of meta/im2gps_places365.csv, TIBHannover/GeoEstimation",
        published=(
            Published("TransLocator", (19.9, 48.1, 64.6, 75.6, 86.7), TRANSLOCATOR, f"{UCLA}; {SURVEY}"),
        ),
    ),
    "im2gps3k": TestSet(
        name="im2gps3k",
        title="Im2GPS3k (Vo, Jacobs & Hays, ICCV 2017)",
        n_images=2997,
        count_source="rows of meta/im2gps3k_places365.csv in TIBHannover/GeoEstimation (commit 5e091c0)",
        manifest_format="places365",
        manifest_names=("im2gps3k_places365.csv",),
        ids_sha256="1cc3039b78f7396e975f42a8345a319b13721529bb97813893a25e6d07622991",
        ids_source="IMG_ID column of meta/im2gps3k_places365.csv, TIBHannover/GeoEstimation",
        notes="copies of im2gps3ktest.zip are reported to hold 3,000 files, 3 of them not in the manifest",
        known_extra=3,
        published=(
            Published(
                "[L]kNN, sigma=4",
                (7.2, 19.4, 26.9, 38.9, 55.9),
                TRANSLOCATOR,
                "TransLocator's table, as quoted in issue 20; not re-checked against the paper here",
                note="Vo et al. 2017's kNN baseline: the published point of comparison for geotag's knn",
            ),
            Published("ISNs (M, f*, S3)", (10.5, 28.0, 36.6, 49.7, 66.0), ISNS, SURVEY),
            Published("TransLocator", (11.8, 31.1, 46.7, 58.9, 80.1), TRANSLOCATOR, f"{UCLA}; {SURVEY}"),
            Published("GeoDecoder", (12.8, 33.5, 45.9, 61.0, 76.1), GEODECODER, SURVEY),
            Published(
                "GeoCLIP",
                (14.11, 34.47, 50.65, 69.67, 83.82),
                GEOCLIP,
                f"{SURVEY}; summaries of the GeoRanker and Geo-R papers' comparison tables",
            ),
            Published(
                "PIGEOTTO",
                (11.3, 36.7, 53.8, 72.4, 85.3),
                PIGEOTTO,
                f"{SURVEY}; a summary of GeoRanker's comparison table (1-200 km)",
            ),
        ),
    ),
    "yfcc4k": TestSet(
        name="yfcc4k",
        title="YFCC4k (Vo, Jacobs & Hays, ICCV 2017)",
        n_images=4536,
        count_source="4,536 images, as three independent public copies state (dataset READMEs and "
        "data notes found by code search); no public id list was at hand to pin",
        manifest_format="places365",
        manifest_names=("yfcc4k_places365.csv", "yfcc4k.csv"),
        published=(
            Published(
                "ISNs (M, f*, S3)",
                (6.5, 16.2, 23.8, 37.4, 55.0),
                f"{ISNS}, as reported by TransLocator",
                SURVEY,
            ),
            Published("TransLocator", (8.4, 18.6, 27.0, 41.1, 60.4), TRANSLOCATOR, f"{UCLA}; {SURVEY}"),
            Published("GeoDecoder", (10.3, 24.4, 33.9, 50.0, 68.7), GEODECODER, SURVEY),
            Published(
                "GeoCLIP",
                (9.59, 19.31, 32.63, 55.0, 74.7),
                "GeoCLIP as evaluated by Jia et al., G3, NeurIPS 2024 (GeoCLIP's paper reports no YFCC4k)",
                f"{SURVEY}; a summary of GeoRanker's comparison table (1-200 km)",
            ),
            Published(
                "PIGEOTTO",
                (10.4, 23.7, 40.6, 62.2, 77.7),
                PIGEOTTO,
                f"{SURVEY}; a summary of GeoRanker's comparison table (1-200 km)",
            ),
        ),
    ),
    "yfcc26k": TestSet(
        name="yfcc26k",
        title="YFCC26k / yfcc25600 (Mueller-Budack et al., ECCV 2018)",
        n_images=25600,
        count_source="the set's name (yfcc25600) and the survey's dataset table",
        manifest_format="places365",
        manifest_names=("yfcc25600_places365.csv", "yfcc26k.csv"),
        published=(Published("TransLocator", (7.2, 17.8, 28.0, 41.3, 60.6), TRANSLOCATOR, UCLA),),
    ),
    "osv5m-test": TestSet(
        name="osv5m-test",
        title="OpenStreetView-5M test split (Astruc et al., CVPR 2024)",
        n_images=210122,
        count_source="OSV-5M paper (arXiv 2404.18873), dataset statistics; not cross-checked here",
        manifest_format="osv5m",
        manifest_names=("test.csv",),
        published=(
            Published(
                "OSV-5M baseline",
                (None, None, None, None, None),
                "Astruc et al., OSV-5M, CVPR 2024; model card of osv5m/baseline",
                "copy of the model card in collinboler/geolocation (osv5m/README.md)",
                geoscore=3361.0,
                note="reports GeoScore, distance and admin-level accuracy, not the km thresholds",
            ),
        ),
    ),
    "osv5m-71": TestSet(
        name="osv5m-71",
        title="71 OSV-5M street photos (the shared test fixture)",
        n_images=71,
        count_source="../shared/fixtures/osv5m-71/gt.csv",
        manifest_format="osv5m",
        manifest_names=("gt.csv",),
        ids_sha256="58d4208b9f0dea6bcbe3af56a70c21eccd2636fbd4a28d904e5cfbbed2ab14e5",
        ids_source="image column of ../shared/fixtures/osv5m-71/gt.csv",
        notes="a fixture for tests and demos; no published results exist for it",
    ),
}


def get_test_set(name: str) -> TestSet:
    """The description of a known test set; an unknown name is an input error listing the known ones."""
    key = name.strip().lower()
    if key not in TEST_SETS:
        raise InputError(f"unknown test set {name!r}; known: {', '.join(TEST_SETS)}")
    return TEST_SETS[key]
