"""Hierarchical S2 geocells: adaptive splits, parents, spherical centroids, vectorised ids vs s2sphere,
the cells file and `geotag cells build`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s2sphere

from geotag.errors import InputError
from geotag.geo import cells as gc
from geotag.geo.cells import Geocells, PartitionSpec, build_cells, leaf_ids, parent_ids

SPECS = (PartitionSpec("coarse", 5, 400), PartitionSpec("middle", 5, 150), PartitionSpec("fine", 5, 60))


def clustered(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cities (dense clusters) plus a thin uniform background, like photo collections."""
    rng = np.random.default_rng(seed)
    centres = np.array(
        [[48.85, 2.35], [40.7, -74.0], [35.7, 139.7], [-33.9, 151.2], [64.1, -21.9], [0.0, 179.95]]
    )
    k = rng.integers(0, len(centres), n)
    lat = centres[k, 0] + rng.normal(0, 0.3 + 2 * (k % 2), n)
    lon = centres[k, 1] + rng.normal(0, 0.3 + 2 * (k % 2), n)
    lon = (lon + 180) % 360 - 180
    background = n // 10
    lat[:background] = np.degrees(np.arcsin(rng.uniform(-1, 1, background)))
    lon[:background] = rng.uniform(-180, 180, background)
    return np.clip(lat, -90, 90), lon


def uniform_sphere(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def s2_leaf(lat: float, lon: float) -> int:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon)).id()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered()


@pytest.fixture(scope="module")
def cells(data) -> Geocells:
    return build_cells(*data, SPECS)


def test_leaf_ids_equal_s2sphere() -> None:
    lat, lon = uniform_sphere(3000, seed=1)
    special_lat = [90, -90, 0, 0, 0, 45, -45, 35.26438968, 0, 89.9999999, 10, 10]
    special_lon = [0, 0, 180, -180, 0, 45, -135, 45, 90, 12, 179.9, -179.9]
    lat, lon = np.r_[lat, special_lat], np.r_[lon, special_lon]
    expected = np.array([s2_leaf(a, b) for a, b in zip(lat, lon, strict=True)], dtype=np.uint64)
    np.testing.assert_array_equal(leaf_ids(lat, lon), expected)
    for level in (0, 1, 7, 13, 29):
        ref = [s2sphere.CellId(int(i)).parent(level).id() for i in expected[:50]]
        np.testing.assert_array_equal(parent_ids(expected[:50], level), np.array(ref, dtype=np.uint64))


def test_assignment_equals_s2sphere_containment(cells: Geocells) -> None:
    lat, lon = uniform_sphere(400, seed=2)
    lat, lon = np.r_[lat, clustered(400, seed=3)[0]], np.r_[lon, clustered(400, seed=3)[1]]
    got = cells.assign(lat, lon)
    for p, part in enumerate(cells.partitions):
        ids = [s2sphere.CellId(int(i)) for i in part.ids]
        for n, (a, b) in enumerate(zip(lat, lon, strict=True)):
            leaf = s2sphere.CellId(s2_leaf(a, b))
            hits = [k for k, c in enumerate(ids) if c.contains(leaf)]
            assert len(hits) <= 1
            assert got[n, p] == (hits[0] if hits else -1)


def test_adaptive_split_respects_tau_max_and_tau_min(data, cells: Geocells) -> None:
    leaves = leaf_ids(*data)

    def count(cell_id: np.uint64) -> int:
        lo, hi = gc._ranges(np.array([cell_id], dtype=np.uint64))
        return int(((leaves >= lo[0]) & (leaves <= hi[0])).sum())

    for part in cells.partitions:
        assert len(part) > 3
        levels = part.levels
        for cell_id, n, level in zip(part.ids, part.n_images, levels, strict=True):
            assert n == count(cell_id)
            assert part.spec.tau_min < n <= part.spec.tau_max or level == gc.MAX_LEVEL
            assert level >= gc.MIN_LEVEL  # GeoEstimation starts at S2 level 2, not at the faces
            if level > gc.MIN_LEVEL:  # it exists because its parent was too full
                assert count(parent_ids(np.array([cell_id]), int(level) - 1)[0]) > part.spec.tau_max
        # every coordinate left out sits in a leaf that ended under tau_min
        out = part.lookup(leaves) < 0
        for leaf in leaves[out][:50]:
            level = next(
                lv
                for lv in range(gc.MIN_LEVEL, 31)
                if count(parent_ids(np.array([leaf]), lv)[0]) <= part.spec.tau_max
            )
            assert count(parent_ids(np.array([leaf]), level)[0]) <= part.spec.tau_min
        assert part.n_images.sum() + out.sum() == len(leaves)


def test_parents_link_to_the_enclosing_coarser_cells(data, cells: Geocells) -> None:
    for k in range(1, len(cells.partitions)):
        fine, coarse = cells.partitions[k], cells.partitions[k - 1]
        for cell_id, parent in zip(fine.ids, fine.parent, strict=True):
            assert s2sphere.CellId(int(coarse.ids[parent])).contains(s2sphere.CellId(int(cell_id)))
        assert (
            np.bincount(fine.parent, weights=fine.n_images, minlength=len(coarse)) <= coarse.n_images
        ).all()
    anc = cells.ancestors()
    assigned = cells.assign(*data)
    missing = cells.assign(np.array([np.nan, 95.0, data[0][0]]), np.array([0.0, 0.0, np.inf]))
    assert (missing == -1).all()
    inside = assigned[:, -1] >= 0
    for p in range(len(cells.partitions)):
        np.testing.assert_array_equal(anc[assigned[inside, -1], p], assigned[inside, p])


def test_centroid_is_the_spherical_mean_across_the_antimeridian() -> None:
    centre = gc.spherical_mean(np.array([10.0, 10.0]), np.array([179.9, -179.9]), np.array([0, 0]), 1)
    assert abs(abs(centre[0, 1]) - 180.0) < 1e-9 and abs(centre[0, 0] - 10.0) < 1e-3
    # from S2 level 2 on, the antimeridian is a cell edge: each side keeps its own cell and centroid
    built = build_cells([10.0, 10.0, 10.0], [179.9, 179.8, -179.9], [PartitionSpec("only", 0, 10)])
    assert sorted(np.round(built.fine.lon, 6).tolist()) == [-179.9, 179.85]


def test_centroids_equal_a_reference_spherical_mean(data, cells: Geocells) -> None:
    lat, lon = data
    index = cells.fine.lookup(leaf_ids(lat, lon))
    for k in range(0, len(cells.fine), max(1, len(cells.fine) // 10)):
        phi, lam = np.radians(lat[index == k]), np.radians(lon[index == k])
        v = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).sum(axis=1)
        ref_lat, ref_lon = np.degrees(np.arcsin(v[2] / np.linalg.norm(v))), np.degrees(np.arctan2(v[1], v[0]))
        assert abs(cells.fine.lat[k] - ref_lat) < 1e-9 and abs(cells.fine.lon[k] - ref_lon) < 1e-9


def test_parquet_round_trip(tmp_path: Path, cells: Geocells) -> None:
    path = cells.save(tmp_path / "cells.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["partition", "id", "level", "lat", "lon", "parent", "polygon", "n_images"]
    back = Geocells.load(path)
    assert back.names == cells.names and back.n_input == cells.n_input
    for a, b in zip(cells.partitions, back.partitions, strict=True):
        assert a.spec == b.spec
        for name in ("ids", "lat", "lon", "n_images", "parent"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # row order is class order (so imported partitions keep theirs); lookups follow it
    perm = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = table.take(perm).replace_schema_metadata(table.schema.metadata)
    again = Geocells.from_table(shuffled)
    fine_rows = [r for r in perm if table.column("partition")[int(r)].as_py() == "fine"]
    fine_start = table.column("partition").to_pylist().index("fine")
    np.testing.assert_array_equal(again.fine.ids, cells.fine.ids[np.array(fine_rows) - fine_start])
    leaves = leaf_ids(*clustered(500, seed=9))
    hit_a, hit_c = again.fine.lookup(leaves), cells.fine.lookup(leaves)
    np.testing.assert_array_equal(hit_a < 0, hit_c < 0)
    np.testing.assert_array_equal(again.fine.ids[hit_a[hit_a >= 0]], cells.fine.ids[hit_c[hit_c >= 0]])
    chain = again.ancestors()
    for p in range(len(again.partitions) - 1):
        coarse = again.partitions[p].ids[chain[:, p]]
        np.testing.assert_array_equal(parent_ids(again.fine.ids, 0), parent_ids(coarse, 0))


def test_polygons_are_valid_and_hold_their_cells(cells: Geocells) -> None:
    shapely = pytest.importorskip("shapely")
    from shapely import wkt

    table = cells.to_table().to_pylist()
    for row in table[:: max(1, len(table) // 40)]:
        poly = wkt.loads(row["polygon"])
        assert poly.is_valid and poly.area > 0
        cid = s2sphere.CellId.from_token(row["id"])
        centre = cid.to_lat_lng()
        lon = centre.lng().degrees
        lon = lon + 360 if poly.bounds[2] > 180 and lon < poly.bounds[0] else lon
        assert poly.covers(shapely.Point(lon, centre.lat().degrees)), row["id"]  # polar centres: on the ring
    for face, pole in ((2, 90.0), (5, -90.0)):  # polar faces close along their pole
        poly = wkt.loads(gc.cell_polygon_wkt(int(s2sphere.CellId.from_face_pos_level(face, 0, 0).id())))
        assert poly.is_valid and pole in (poly.bounds[1], poly.bounds[3])
        assert poly.bounds[2] - poly.bounds[0] == pytest.approx(360.0) and -180 <= poly.bounds[0] < 180
        lon = poly.bounds[0] + 10.0
        assert poly.contains(shapely.Point(lon, pole * 0.9)) and not poly.contains(shapely.Point(lon, 0))


def test_partition_specs_must_nest() -> None:
    with pytest.raises(InputError, match="coarse to fine"):
        gc.validate_specs([PartitionSpec("a", 5, 100), PartitionSpec("b", 5, 200)])
    with pytest.raises(InputError, match="tau_min"):
        gc.validate_specs([PartitionSpec("a", 50, 10)])
    with pytest.raises(InputError, match="tau_min < tau_max"):
        gc.validate_specs([PartitionSpec("a", 50, 50)])  # every cell kept would be dropped
    assert gc.parse_specs("a,b", "10,5", "2") == ([PartitionSpec("a", 2, 10), PartitionSpec("b", 2, 5)], True)
    assert gc.parse_specs(None, None, None) == (list(gc.DEFAULT_PARTITIONS), False)
    with pytest.raises(InputError, match="one name and one tau_max"):
        gc.parse_specs("a,b,c", "10,5", "2")


def test_auto_scale_shrinks_thresholds_for_small_data() -> None:
    assert gc.scale_specs(gc.DEFAULT_PARTITIONS, gc.MP16_IMAGES * 2, "auto") == list(gc.DEFAULT_PARTITIONS)
    small = gc.scale_specs(gc.DEFAULT_PARTITIONS, 10_000, "auto")
    assert [s.tau_max for s in small] == [230, 92, 46] and all(s.tau_min == 2 for s in small)
    gc.validate_specs(small)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geotag.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_cells_build(tmp_path: Path) -> None:
    lat, lon = clustered(600, seed=4)
    manifest = tmp_path / "train.csv"
    manifest.write_text(
        "image,Latitude,LONGITUDE\n"
        + "".join(f"img{i}.jpg,{a},{b}\n" for i, (a, b) in enumerate(zip(lat, lon, strict=True)))
        + "broken.jpg,,\n"
        + "unknown.jpg,n/a,12.5\n"
    )
    out = tmp_path / "cells.parquet"
    result = _run_cli(
        "cells", "build", str(manifest), "--out", str(out), "--tau-max", "80,40,20", "--tau-min", "3"
    )
    assert result.returncode == 0, result.stderr
    assert "600 of 602 manifest rows" in result.stderr
    built = Geocells.load(out)
    assert built.names == ["coarse", "middle", "fine"] and built.n_input == 600
    assert [p.spec.tau_max for p in built.partitions] == [80, 40, 20]  # given thresholds are not scaled

    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table({"latitude": lat, "longitude": lon}), parquet)
    result = _run_cli("cells", "build", str(parquet), "-o", str(out), "--tau-max", "300,100,60")
    assert result.returncode == 0, result.stderr  # the MP-16 defaults are never scaled silently
    assert [p.spec.tau_min for p in Geocells.load(out).partitions] == [50, 50, 50]
    result = _run_cli("cells", "build", str(parquet), "-o", str(out), "--scale", "auto")
    assert result.returncode == 0, result.stderr
    assert [p.spec.tau_max for p in Geocells.load(out).partitions] == [56, 23, 11]
    assert "thresholds scaled (auto) to 600 coordinates" in result.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    result = _run_cli("cells", "build", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert "lat/latitude" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_islands_keep_their_own_cells_from_level_two() -> None:
    """Reunion, Seychelles and Maldives (3,515 / 889 / 269 MP-16 photos, the counts of the issue) share one
    S2 face; under MP-16's thresholds a face-level start made them one cell centred in open sea."""
    rng = np.random.default_rng(3)
    places = {(-21.1, 55.5): 3515, (-4.6, 55.45): 889, (3.2, 73.2): 269}
    lat = np.concatenate([np.full(n, a) + rng.normal(0, 0.05, n) for (a, _), n in places.items()])
    lon = np.concatenate([np.full(n, b) + rng.normal(0, 0.05, n) for (_, b), n in places.items()])
    coarse = build_cells(lat, lon, gc.DEFAULT_PARTITIONS[:1]).partitions[0]
    got = coarse.lookup(leaf_ids(np.array([a for a, _ in places]), np.array([b for _, b in places])))
    assert (got >= 0).all() and len(set(got.tolist())) == 3
    for (a, b), k in zip(places, got, strict=True):
        assert abs(coarse.lat[k] - a) < 0.1 and abs(coarse.lon[k] - b) < 0.1
    # the old rule (start at the faces) put all three in one cell
    ids, _ = gc.adaptive_cells(leaf_ids(lat, lon), 50, 5000, min_level=0)
    assert len(ids) == 1


def test_cells_holding_exactly_tau_min_are_dropped() -> None:
    lat = np.concatenate([np.full(5, 10.0), np.full(6, -30.0)])
    lon = np.concatenate([np.full(5, 20.0), np.full(6, 100.0)])
    part = build_cells(lat, lon, [PartitionSpec("only", 5, 100)]).partitions[0]
    assert part.n_images.tolist() == [6]  # GeoEstimation's delete_cells drops <= tau_min


# The layout of GeoEstimation's published cells_50_*.csv: two header lines, then five columns; rows below
# are taken from cells_50_1000.csv (class order is not S2-id order there).
PUBLISHED_HEAD = "num_images: 4723695\nmin_concept_probability: ---\n"
PUBLISHED_COLUMNS = "class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n"


def _published(path: Path, rows: list[tuple[str, int, float, float]]) -> Path:
    body = "".join(f"{k},{t},{n},{a},{b}\n" for k, (t, n, a, b) in enumerate(rows))
    path.write_text(PUBLISHED_HEAD + PUBLISHED_COLUMNS + body)
    return path


def test_import_geoestimation_keeps_class_order_and_nests(tmp_path: Path) -> None:
    from geotag.geo.cells_import import import_geoestimation

    coarse = [("8747c", 827, 38.67, -109.5), ("365", 589, 36.1, 103.0), ("47", 4000, 46.0, 10.0)]
    fine = [("477eb1d1", 852, 45.43, 12.33), ("8747c", 827, 38.67, -109.5), ("47f4ebb", 854, 45.76, 4.82)]
    files = [
        _published(tmp_path / "cells_50_1000.csv", fine),
        _published(tmp_path / "cells_50_5000.csv", coarse),
    ]
    cells = import_geoestimation(files)
    assert [p.spec for p in cells.partitions] == [
        PartitionSpec("p0", 50, 5000),
        PartitionSpec("p1", 50, 1000),
    ]
    assert cells.n_input == 4723695
    assert cells.partitions[1].tokens() == ["477eb1d1", "8747c", "47f4ebb"]  # the file's class order
    assert cells.partitions[1].parent.tolist() == [2, 0, 2]
    assert cells.assign(np.array([45.4329053]), np.array([12.3321458])).tolist() == [[2, 0]]
    cells.save(tmp_path / "cells.parquet")
    back = Geocells.load(tmp_path / "cells.parquet")
    assert back.partitions[1].tokens() == ["477eb1d1", "8747c", "47f4ebb"]
    np.testing.assert_array_equal(back.partitions[1].lat, [45.43, 38.67, 45.76])

    loose = [("89c2f61", 961, 40.8, -73.95)]  # New York: inside no coarse cell above
    with pytest.raises(gc.SchemaError, match="do not nest"):
        import_geoestimation([files[1], _published(tmp_path / "cells_50_2000.csv", loose)])
    bad = tmp_path / "cells_50_100.csv"
    bad.write_text(PUBLISHED_HEAD + "hex_id,imgs\n")
    with pytest.raises(gc.SchemaError, match="header"):
        import_geoestimation([bad])


def test_cli_cells_import(tmp_path: Path) -> None:
    rows = [("8747c", 827, 38.67, -109.5), ("365", 589, 36.1, 103.0)]
    files = [_published(tmp_path / f"cells_50_{m}.csv", rows) for m in (5000, 2000, 1000)]
    out = tmp_path / "cells.parquet"
    result = _run_cli("cells", "import", *map(str, reversed(files)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    cells = Geocells.load(out)
    assert cells.names == ["coarse", "middle", "fine"]
    assert [p.spec.tau_max for p in cells.partitions] == [5000, 2000, 1000]
    result = _run_cli("cells", "import", str(tmp_path / "missing_50_5.csv"), "--out", str(out))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(
    not (
        Path(__import__("os").environ.get("GEOTAG_GEOESTIMATION_CELLS", "/nonexistent")) / "cells_50_1000.csv"
    ).is_file(),
    reason="set GEOTAG_GEOESTIMATION_CELLS to a folder with GeoEstimation's published cells_50_*.csv",
)
def test_published_partitions_follow_the_rules_we_build_by() -> None:
    """On the real files: 3,298 / 7,202 / 12,893 cells, nested, none above level 2's start or at tau_min."""
    import os

    from geotag.geo.cells_import import import_geoestimation

    folder = Path(os.environ["GEOTAG_GEOESTIMATION_CELLS"])
    cells = import_geoestimation([folder / f"cells_50_{m}.csv" for m in (5000, 2000, 1000)])
    assert [len(p) for p in cells.partitions] == [3298, 7202, 12893]
    for part in cells.partitions:
        assert part.levels.min() >= gc.MIN_LEVEL
        assert (part.n_images > part.spec.tau_min).all()
        assert ((part.n_images <= part.spec.tau_max) | (part.levels == gc.MAX_LEVEL)).all()
