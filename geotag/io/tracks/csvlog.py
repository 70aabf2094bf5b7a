"""CSV track logs (the csv module; the format is a header row and one fix per row).

Columns are recognised by name, case-insensitively, after dropping a leading `GPS` as exiftool does
(its CSV log format: GPSDateTime, or GPSDateStamp + GPSTimeStamp; GPSLatitude, GPSLongitude with
optional GPSLatitudeRef / GPSLongitudeRef; GPSAltitude), and also the plain names loggers write: time /
timestamp / datetime / date + time, lat / latitude, lon / lng / longitude, alt / altitude / ele /
elevation / height, hdop, pdop, sats / satellites, accuracy. Coordinates are decimal or exiftool's
flexible degrees (`33 52 12.5 S`). A time with a zone or Z is honoured; a naive time is UTC (exiftool's
documentation: "Time is assumed to be in UTC unless the values contain another time zone"). A number
alone in a time column is Unix seconds (milliseconds above 1e11). The delimiter is `,`, or `;` / tab
when the header has no comma.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

from geotag.io.tracks._base import NAN, Builder, decode_text, fail, parse_degrees, parse_time, read_bounded

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (param, re.compile(pattern, re.I))
    for param, pattern in (
        ("datetime", r"^(date[ _/]?time|timestamp|time[ _]?stamp[ _]?utc|utc|iso[ _]?time)$"),
        ("latref", r"^(pos)?lat(itude)?[ _]?ref$"),
        ("lonref", r"^(pos)?lon(gitude)?[ _]?ref$"),
        ("date", r"^date([ _]?stamp)?$"),
        ("time", r"^time([ _]?stamp)?$|^time[ _]?\(utc\)$"),
        ("lat", r"^(pos)?lat(itude)?([ _]?\(deg(rees)?\))?$"),
        ("lon", r"^(pos)?(lon|lng|long|longitude)([ _]?\(deg(rees)?\))?$"),
        ("alt", r"^(pos)?(alt|altitude|height|ele|elevation)([ _]?\(m\))?$"),
        ("hdop", r"^hdop$"),
        ("pdop", r"^pdop$"),
        ("sats", r"^(sats|satellites|nsats|num[ _]?sats|sat)$"),
        ("accuracy", r"^(accuracy|accuracy[ _]?m|horizontal[ _]?accuracy|hacc|h[ _]?accuracy)$"),
    )
)
_DMY = re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4})\b")


def _delimiter(header: str) -> str:
    if "," in header:
        return ","
    return ";" if ";" in header else ("\t" if "\t" in header else ",")


def header_columns(header: str) -> dict[str, int] | None:
    """The recognised columns of a header row (param -> index), or None unless it names a latitude, a
    longitude and a time (a date-time, or a time of day)."""
    try:
        names = next(csv.reader([header], delimiter=_delimiter(header)))
    except (csv.Error, StopIteration):
        return None
    columns: dict[str, int] = {}
    for index, raw in enumerate(names):
        name = re.sub(r"^gps[ _]?", "", raw.strip().strip('"'), flags=re.I)
        if raw.strip().lower().replace(" ", "") == "gpstimestamp" and "time" not in columns:
            columns["time"] = index  # exiftool's GPSTimeStamp is a time of day, beside GPSDateStamp
            continue
        for param, pattern in _PATTERNS:
            if pattern.match(name) and param not in columns:
                columns[param] = index
                break
    if "lat" in columns and "lon" in columns and ("datetime" in columns or "time" in columns):
        return columns
    return None


def read_csv(path: Path, name: str) -> Builder:
    text = decode_text(read_bounded(path), name)
    header = text.split("\n", 1)[0].rstrip("\r")
    columns = header_columns(header)
    if columns is None:
        raise fail(name, "line 1", "no time, latitude and longitude columns in the header")
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(header))
    next(reader)
    b = Builder(name)
    get = columns.get
    i_dt, i_date, i_time = get("datetime"), get("date"), get("time")
    i_lat, i_lon, i_alt = columns["lat"], columns["lon"], get("alt")
    extra = [(key, get(key)) for key in ("hdop", "pdop", "sats", "accuracy")]
    i_latref, i_lonref = get("latref"), get("lonref")
    try:
        for row in reader:
            line = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue

            def cell(i: int | None, row: list[str] = row) -> str:
                return row[i].strip() if i is not None and i < len(row) else ""

            lat_text, lon_text = cell(i_lat), cell(i_lon)
            if not lat_text or not lon_text:
                continue  # a row without a position (a logger's status line)
            lat, lon = parse_degrees(lat_text), parse_degrees(lon_text)
            if lat != lat or lon != lon:
                bad = "latitude" if lat != lat else "longitude"
                raise fail(
                    name,
                    f"line {line}",
                    f"{bad} {(lat_text if lat != lat else lon_text)[:40]!r} is no number",
                )
            if cell(i_latref).upper().startswith("S"):
                lat = -abs(lat)
            if cell(i_lonref).upper().startswith("W"):
                lon = -abs(lon)
            t = _row_time(cell(i_dt), cell(i_date), cell(i_time))
            if t is None:
                shown = cell(i_dt) or " ".join(x for x in (cell(i_date), cell(i_time)) if x)
                if not shown:
                    b.untimed += 1
                    continue
                raise fail(name, f"line {line}", f"time {shown[:40]!r} does not parse")
            values = {}
            for key, i in extra:
                text_value = cell(i)
                try:
                    values[key] = float(text_value) if text_value else NAN
                except ValueError:
                    raise fail(name, f"line {line}", f"{key} {text_value[:20]!r} is no number") from None
            alt_text = cell(i_alt)
            try:
                alt = float(alt_text) if alt_text else NAN
            except ValueError:
                raise fail(name, f"line {line}", f"altitude {alt_text[:20]!r} is no number") from None
            b.add(
                t,
                lat,
                lon,
                alt=alt,
                hdop=values["hdop"],
                pdop=values["pdop"],
                sats=values["sats"],
                accuracy=values["accuracy"],
                record=line,
            )
    except csv.Error as e:
        raise fail(name, f"line {reader.line_num}", f"not valid CSV ({e})") from None
    return b


def _row_time(dt_text: str, date_text: str, time_text: str) -> float | None:
    if dt_text:
        return _datetime(dt_text)
    if time_text:
        full = _datetime(time_text)  # a `time` column holding a whole date-time (loggers, togeojson)
        if full is not None or not date_text:
            return full
        day = _date(date_text)
        return None if day is None else parse_time(f"{day}T{time_text}")
    return None


def _datetime(text: str) -> float | None:
    if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        value = float(text)
        return value / 1000.0 if value > 1e11 else value
    m = _DMY.match(text)
    if m:
        text = f"{m[3]}-{int(m[2]):02d}-{int(m[1]):02d}{text[m.end() :]}"
    return parse_time(text)


def _date(text: str) -> str | None:
    """YYYY-MM-DD from `YYYY-MM-DD`, `YYYY:MM:DD`, `DD/MM/YYYY` (exiftool's GPS/IMU logs) or `YYMMDD`."""
    m = re.fullmatch(r"(\d{4})[-:/.](\d{1,2})[-:/.](\d{1,2})", text)
    if m:
        y, mo, d = m[1], m[2], m[3]
    elif m := re.fullmatch(r"(\d{1,2})[./](\d{1,2})[./](\d{4})", text):
        y, mo, d = m[3], m[2], m[1]
    elif m := re.fullmatch(r"(\d{2})(\d{2})(\d{2})", text):
        y, mo, d = f"20{m[1]}", m[2], m[3]
    else:
        return None
    try:
        return datetime(int(y), int(mo), int(d), tzinfo=UTC).date().isoformat()
    except ValueError:
        return None
