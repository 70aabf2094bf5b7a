"""Make `sample_data/`: small rendered scenes with GPS EXIF, some without GPS, one broken file.

The images are drawn here (a sky, hills coloured by climate band, the place name) and tagged with the
place's coordinates, in every format geotag reads, so `make demo` can show scan, predict and eval end to
end with known ground truth. Each place has several photos (views), as a real archive does, so a kNN
gallery of the tagged ones can place a held-out photo by its siblings; these are drawings, not a
benchmark of real photos. Saving through Pillow is fine for images we create; user photos are never
re-encoded. Run: `python -m geotag.sample_data sample_data`.
"""

from __future__ import annotations

import csv
import math
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from geotag.io import decode as _decode  # noqa: F401  (registers the HEIF plugin)

GPS_IFD = 0x8825
EXIF_IFD = 0x8769


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    file: str  # relative path inside the sample folder; the suffix picks the format
    tagged: bool = True
    view: int = 0  # another photo of the same place: same climate, hills and name; other sun and framing


SITES = (  # (name, lat, lon, first photo's file): both hemispheres, every format geotag reads
    ("Paris", 48.858370, 2.294481, "europe/paris.jpg"),
    ("Rome", 41.890210, 12.492231, "europe/rome.webp"),
    ("New York", 40.689247, -74.044502, "americas/new_york.png"),
    ("Rio de Janeiro", -22.951916, -43.210487, "americas/rio.jpg"),
    ("Quito", -0.180653, -78.467834, "americas/quito.tiff"),
    ("Tokyo", 35.658581, 139.745438, "asia/tokyo.heic"),
    ("Sydney", -33.856784, 151.215297, "oceania/sydney.jpg"),
    ("Nairobi", -1.292066, 36.821945, "africa/nairobi.JPG"),
)
VIEWS = 3  # tagged photos per place: leave-one-out kNN places each one by its two siblings


def _view_file(file: str, view: int) -> str:
    """europe/paris.jpg, europe/paris_2.jpg, europe/paris_3.jpg: one format per place."""
    stem, dot, suffix = file.rpartition(".")
    return file if view == 0 else f"{stem}_{view + 1}{dot}{suffix}"


TAGGED = tuple(Place(n, lat, lon, _view_file(f, v), view=v) for n, lat, lon, f in SITES for v in range(VIEWS))
# untagged further photos of two tagged places: what a photographer's archive looks like, and what kNN and
# training learn to place from the tagged part (truth.csv knows where they are; their EXIF does not)
UNTAGGED = (
    Place("Paris", 48.858370, 2.294481, "untagged/no_gps_1.jpg", tagged=False, view=VIEWS),
    Place("Sydney", -33.856784, 151.215297, "untagged/no_gps_2.png", tagged=False, view=VIEWS),
)
PLACES = TAGGED + UNTAGGED
TRUNCATED_FILE = "untagged/truncated.jpg"  # header fine, pixels missing: predict reports it
NOT_A_PHOTO = "untagged/not_a_photo.png"  # no image at all: scan reports it


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    deg = int(value)
    minutes_float = (value - deg) * 60
    minutes = int(minutes_float)
    seconds = Fraction(round((minutes_float - minutes) * 60 * 10000), 10000)
    return Fraction(deg), Fraction(minutes), seconds


def make_exif(place: Place, taken: datetime) -> Image.Exif:
    """EXIF with camera fields, DateTimeOriginal and, for tagged places, GPS with explicit N/S/E/W refs."""
    exif = Image.Exif()
    exif[0x010F] = "geotag"
    exif[0x0110] = "sample renderer"
    exif[0x0112] = 1
    exif.get_ifd(EXIF_IFD)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if place.tagged:
        gps = exif.get_ifd(GPS_IFD)
        gps[0] = b"\x02\x03\x00\x00"
        gps[1] = "N" if place.lat >= 0 else "S"
        gps[2] = _dms(place.lat)
        gps[3] = "E" if place.lon >= 0 else "W"
        gps[4] = _dms(place.lon)
    return exif


def _climate_colour(lat: float, rng: random.Random) -> tuple[int, int, int]:
    band = abs(lat)
    base = (70, 140, 60) if band < 23 else (120, 150, 70) if band < 45 else (150, 160, 150)
    return tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base)  # type: ignore[return-value]


def render(place: Place, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A small landscape whose colours depend on latitude, with the place name written on it.

    The place (its name) fixes the ground colour, the hills and the side the sun is on; each further view
    is another photo taken there: the sun a little higher or aside, the hills seen from a step away, and
    a zoomed, shifted framing. View 0 is the whole scene."""
    rng = random.Random(place.name)
    shot = random.Random(f"{place.name}/{place.view}")

    def jitter(low: float, high: float) -> float:
        return shot.uniform(low, high) if place.view else 0.0

    w, h = size
    zoom = 1.0 + (0.1 + jitter(0.0, 0.2) if place.view else 0.0)
    cw, ch = int(w * zoom), int(h * zoom)
    img = Image.new("RGB", (cw, ch))
    draw = ImageDraw.Draw(img)
    haze, wavelength = rng.randint(-40, 40), rng.uniform(35, 90)  # the place's light and landforms
    for y in range(ch):
        t = min(1.0, y / (ch / 2))
        draw.line([(0, y), (cw, y)], fill=(int(90 + haze + 120 * t), int(150 + 80 * t), 235 - max(0, haze)))
    sun_x = int(cw * (0.2 + 0.6 * rng.random()) + jitter(-0.1, 0.1) * cw)
    sun_y = int(40 + jitter(0, 40))
    draw.ellipse([sun_x - 30, sun_y, sun_x + 30, sun_y + 60], fill=(255, 230, 120))
    ground = _climate_colour(place.lat, rng)
    for layer in range(3):
        phase, amp = rng.random() * math.tau + jitter(-0.8, 0.8), (20 + 15 * layer) * (1 + jitter(-0.2, 0.2))
        shade = tuple(int(c * (0.8 + 0.1 * layer)) for c in ground)
        base = ch // 2 + 30 * layer
        pts = [(x, base + amp * math.sin(x / wavelength + phase)) for x in range(0, cw + 8, 8)]
        draw.polygon([(0, ch), *pts, (cw, ch)], fill=shade)
    dx, dy = int(jitter(0, cw - w)), int(jitter(0, ch - h))
    img = img.crop((dx, dy, dx + w, dy + h))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=36)
    draw.text(
        (20, h - 60), place.name, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0)
    )
    return img


def _save(img: Image.Image, path: Path, exif: Image.Exif) -> None:
    suffix = path.suffix.lower()
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tiff": "TIFF", ".heic": "HEIF"}[suffix]
    options: dict[str, object] = {"exif": exif.tobytes()}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        options["quality"] = 90
    img.save(path, format=fmt, **options)


# --- the trip: time as evidence (sample_data/trip) ---------------------------------------------------------
# A morning ride logged by a GPS (track.gpx), a walk later on photographed with a phone (GPS-tagged photos),
# and a camera without GPS along both, whose clock runs 3 min 12 s slow; one more camera photo in the
# evening, far from any fix, for the visual model. All photos carry OffsetTimeOriginal (+01:00, Lisbon in
# summer). The positions are functions of time (a straight walk, a gently curving ride): the track and the
# phone sample them, and the truth of each camera photo is the function at its true time.
TRIP = "trip"
TRIP_NAME = "Lisbon"
TRIP_DAY = datetime(2024, 6, 15)  # UTC date
TRIP_ZONE = timedelta(hours=1)  # OffsetTimeOriginal +01:00
CAMERA_SLOW_S = 192  # the camera's clock is 3 min 12 s behind: --clock-offset "NIKON D850=+0:03:12"
CAMERA = ("NIKON CORPORATION", "NIKON D850")
PHONE = ("Apple", "iPhone 13")
RIDE = (timedelta(hours=9), timedelta(hours=9, minutes=30))  # the GPS track, UTC
WALK = (timedelta(hours=11), timedelta(hours=11, minutes=30))  # the phone photos, UTC
TRACK_STEP_S = 10
PHONE_SHOTS_MIN = (0, 10, 20, 30)  # minutes into the walk
CAMERA_SHOTS = (  # UTC time of the day: four during the ride, two during the walk, one in the evening
    timedelta(hours=9, minutes=4, seconds=33),
    timedelta(hours=9, minutes=11, seconds=7),
    timedelta(hours=9, minutes=18, seconds=24),
    timedelta(hours=9, minutes=26, seconds=41),
    timedelta(hours=11, minutes=5, seconds=12),
    timedelta(hours=11, minutes=24, seconds=3),
    timedelta(hours=19, minutes=10),
)
EVENING = (38.6916, -9.2160)  # Belem: no fix within hours, so only a visual model can place it


def trip_position(t: timedelta) -> tuple[float, float, float]:
    """(lat, lon, altitude m) at UTC time of day `t`: on the ride, on the walk, else the evening spot."""
    for (start, end), path in ((RIDE, _ride), (WALK, _walk)):
        if start <= t <= end:
            return path((t - start) / (end - start))
    return (*EVENING, 8.0)


def _ride(u: float) -> tuple[float, float, float]:
    """About 2.7 km west along the river in 30 min."""
    return (
        38.7075 - 0.0040 * u + 0.0015 * math.sin(math.pi * u),
        -9.1365 - 0.0300 * u,
        5 + 15 * math.sin(math.pi * u),
    )


def _walk(u: float) -> tuple[float, float, float]:
    """About 1.1 km up through Alfama in 30 min, in a straight line."""
    return 38.7110 + 0.0080 * u, -9.1300 - 0.0060 * u, 20 + 40 * u


def _trip_exif(
    make_model: tuple[str, str], local: datetime, gps: tuple[float, float, float] | None, utc: datetime | None
) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make_model
    exif[0x0112] = 1
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[0x9003] = local.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9011] = "+01:00"  # OffsetTimeOriginal
    if gps is not None and utc is not None:
        lat, lon, alt = gps
        g = exif.get_ifd(GPS_IFD)
        g[0] = b"\x02\x03\x00\x00"
        g[1], g[2] = ("N" if lat >= 0 else "S"), _dms(lat)
        g[3], g[4] = ("E" if lon >= 0 else "W"), _dms(lon)
        g[5], g[6] = (b"\x00" if alt >= 0 else b"\x01"), Fraction(round(abs(alt) * 100), 100)
        g[7] = (Fraction(utc.hour), Fraction(utc.minute), Fraction(utc.second))
        g[29] = utc.strftime("%Y:%m:%d")
    return exif


def trip_track_gpx() -> str:
    """The ride as GPX 1.1, a fix every TRACK_STEP_S seconds with its elevation."""
    start, end = RIDE
    points = []
    t = start
    while t <= end:
        lat, lon, alt = trip_position(t)
        points.append(
            f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>{alt:.1f}</ele>'
            f"<time>{(TRIP_DAY + t):%Y-%m-%dT%H:%M:%S}Z</time></trkpt>"
        )
        t += timedelta(seconds=TRACK_STEP_S)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="geotag sample_data" xmlns="http://www.topografix.com/GPX/1/1">\n'
        "<trk><name>morning ride</name><trkseg>\n" + "\n".join(points) + "\n</trkseg></trk></gpx>\n"
    )


def make_trip(folder: Path, size: tuple[int, int] = (480, 360)) -> list[Path]:
    """Write the trip into `folder`: track.gpx, phone_N.jpg (GPS-tagged), camera_N.jpg (no GPS, clock
    CAMERA_SLOW_S slow) and truth.csv (every photo's true position); returns the photo paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "track.gpx").write_text(trip_track_gpx())
    shots: list[tuple[str, tuple[str, str], timedelta, bool]] = [
        (f"phone_{i + 1}.jpg", PHONE, WALK[0] + timedelta(minutes=m), True)
        for i, m in enumerate(PHONE_SHOTS_MIN)
    ]
    shots += [(f"camera_{i + 1}.jpg", CAMERA, t, False) for i, t in enumerate(CAMERA_SHOTS)]
    written = []
    with open(folder / "truth.csv", "w", newline="") as fh:
        truth = csv.writer(fh)
        truth.writerow(["path", "lat", "lon", "name"])
        for view, (name, device, t, tagged) in enumerate(shots):
            lat, lon, alt = trip_position(t)
            utc = TRIP_DAY + t
            local = utc + TRIP_ZONE - (timedelta(0) if tagged else timedelta(seconds=CAMERA_SLOW_S))
            exif = _trip_exif(device, local, (lat, lon, alt) if tagged else None, utc if tagged else None)
            place = Place(TRIP_NAME, lat, lon, name, tagged=tagged, view=view)
            render(place, size).save(folder / name, "JPEG", quality=85, exif=exif.tobytes())
            truth.writerow([name, f"{lat:.7f}", f"{lon:.7f}", TRIP_NAME])
            written.append(folder / name)
    return written


def make_sample_data(folder: Path, trip: bool = True) -> list[Path]:
    """Write the sample photos and `truth.csv` (path, lat, lon) into `folder`, and with `trip` the time
    evidence of `folder/trip` (make_trip: a GPX track, phone photos, a camera's); returns the photo paths.
    The steps of `make demo` before the trip leave `trip/` out (--exclude), as the tests that count the
    sample photos do (trip=False)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with open(folder / "truth.csv", "w", newline="") as fh:
        truth = csv.writer(fh)
        truth.writerow(["path", "lat", "lon", "name"])
        for i, place in enumerate(PLACES):
            path = folder / place.file
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(render(place), path, make_exif(place, datetime(2024, 6, 1, 12) + timedelta(days=i)))
            truth.writerow([place.file, place.lat, place.lon, place.name])
            written.append(path)
    good = (folder / PLACES[0].file).read_bytes()
    (folder / TRUNCATED_FILE).write_bytes(good[: len(good) // 3])
    (folder / NOT_A_PHOTO).write_text("this is not a picture\n")
    written += [folder / TRUNCATED_FILE, folder / NOT_A_PHOTO]
    if trip:
        written += make_trip(folder / TRIP)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "sample_data")
    paths = make_sample_data(folder)
    print(f"wrote {len(paths)} sample photos to {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
