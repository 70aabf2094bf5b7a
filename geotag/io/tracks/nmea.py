"""NMEA 0183 logs through pynmea2: RMC (position, date), GGA (position, altitude, satellites, hdop; time
of day only), GLL, GSA (pdop / hdop of the current fix), ZDA (date), and Magellan's $PMGNTRK track
sentences (exiftool's Geotag.log).

Sentences of one fix share a time of day and are merged into one fix (position from the first sentence
that has one, quality from GGA / GSA), as exiftool does. A fix without a date (a GGA) takes the date of
the nearest dated fix before it (else after it), rolling over at midnight. Sentences geotag does not use
(attitude such as $PTNTHPR, satellites in view, ...) are skipped unread, checksum included: exiftool's own
Geotag2.log has PTNTHPR sentences whose checksums are wrong. A sentence geotag uses must carry a correct
checksum when it has one. RMC / GLL marked void (V) and GGA with fix quality 0 are not positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from geotag.io.tracks._base import NAN, Builder, decode_text, fail, read_bounded

_USED = re.compile(r"\$(?:[A-Z]{2}(RMC|GGA|GLL|GSA|ZDA)|P(MGNTRK)),")
_DAY = 86400.0


@dataclass
class _Epoch:
    line: int
    tod: float  # seconds into the UTC day
    day: date | None = None
    lat: float = NAN
    lon: float = NAN
    alt: float = NAN
    hdop: float = NAN
    pdop: float = NAN
    sats: float = NAN


def _tod(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _float(value: object) -> float:
    try:
        return float(value) if value not in (None, "") else NAN
    except (TypeError, ValueError):
        return NAN


def read_nmea(path: Path, name: str) -> Builder:
    import pynmea2

    text = decode_text(read_bounded(path), name)
    epochs: list[_Epoch] = []
    current: _Epoch | None = None
    skipped = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        start = raw.find("$")
        if start < 0:
            continue
        match = _USED.match(raw, start)
        if not match:
            continue  # a sentence geotag does not use
        kind = match[1] or match[2]
        sentence = raw[start:].strip()
        try:
            msg = pynmea2.parse(sentence, check=False)
        except pynmea2.ChecksumError:
            raise fail(name, f"line {number}", "bad checksum") from None
        except (pynmea2.ParseError, ValueError) as e:
            raise fail(name, f"line {number}", f"not a valid NMEA sentence ({e})") from None
        where = f"line {number}"
        try:
            fix = _read_sentence(kind, msg)
        except (ValueError, TypeError, AttributeError, IndexError) as e:
            raise fail(name, where, f"bad {kind} sentence ({e})") from None
        if fix is None:
            skipped += 1
            continue
        if kind == "GSA":
            if current is not None:
                current.pdop = fix["pdop"]
                if current.hdop != current.hdop:
                    current.hdop = fix["hdop"]
            continue
        tod = fix["tod"]
        if current is None or abs(tod - current.tod) > 1e-3:
            current = _Epoch(line=number, tod=tod)
            epochs.append(current)
        if fix.get("day") is not None and not isinstance(fix["day"], date):
            raise fail(name, where, f"bad date {str(fix['day'])[:12]!r} in {kind} sentence")
        if fix.get("day") is not None and current.day is None:
            current.day = fix["day"]
        if "lat" in fix and current.lat != current.lat:
            current.lat, current.lon = fix["lat"], fix["lon"]
        for key in ("alt", "hdop", "sats"):
            if key in fix and getattr(current, key) != getattr(current, key):
                setattr(current, key, fix[key])

    b = Builder(name)
    undated = _date_epochs(epochs)
    for e in epochs:
        if e.lat != e.lat:
            continue  # a time (ZDA) without a position
        if e.day is None:
            continue
        t = datetime.combine(e.day, time(), tzinfo=UTC).timestamp() + e.tod
        b.add(t, e.lat, e.lon, alt=e.alt, hdop=e.hdop, pdop=e.pdop, sats=e.sats, record=e.line)
    if undated:
        b.notes.append(f"{undated} fix(es) without a date (no RMC or ZDA sentence in the file); not used")
    if skipped:
        b.notes.append(f"{skipped} void or fixless sentence(s) skipped")
    return b


def _position(msg) -> dict:
    """lat / lon of a sentence; pynmea2 reads an unknown hemisphere letter as 0 degrees, we refuse it."""
    if msg.lat_dir not in ("N", "S") or msg.lon_dir not in ("E", "W"):
        raise ValueError(f"hemisphere {msg.lat_dir!r} / {msg.lon_dir!r} is not N/S and E/W")
    return {"lat": msg.latitude, "lon": msg.longitude}


def _read_sentence(kind: str, msg) -> dict | None:
    """The fields one sentence gives, or None when it holds no valid fix."""
    if kind == "RMC":
        if msg.status != "A" or not msg.lat:
            return None
        return {"tod": _tod(msg.timestamp), "day": msg.datestamp, **_position(msg)}
    if kind == "GGA":
        if msg.gps_qual == 0 or not msg.lat:  # an empty quality field is accepted, as exiftool does
            return None
        return {
            "tod": _tod(msg.timestamp),
            **_position(msg),
            "alt": _float(msg.altitude),
            "hdop": _float(msg.horizontal_dil),
            "sats": _float(msg.num_sats),
        }
    if kind == "GLL":
        if msg.status != "A" or not msg.lat:
            return None
        return {"tod": _tod(msg.timestamp), **_position(msg)}
    if kind == "GSA":
        return {"pdop": _float(msg.pdop), "hdop": _float(msg.hdop)}
    if kind == "ZDA":
        if not msg.timestamp or not msg.year:
            return None
        return {"tod": _tod(msg.timestamp), "day": date(int(msg.year), int(msg.month), int(msg.day))}
    return _read_pmgntrk(msg.data)


def _read_pmgntrk(data: list[str]) -> dict | None:
    """$PMGNTRK,ddmm.mmm,N,dddmm.mmm,W,alt,M|F,hhmmss.ss,A|V,name,ddmmyy (pynmea2 knows the Magellan
    family but not this sentence's fields)."""
    from pynmea2.nmea_utils import dm_to_sd, timestamp

    fields = data[1:] + [""] * 10
    lat, ns, lon, ew, alt, unit, hms, status, _name, dmy = fields[:10]
    if status != "A" or not lat or not lon:
        return None
    if ns not in ("N", "S") or ew not in ("E", "W"):
        raise ValueError(f"hemisphere {ns!r} / {ew!r} is not N/S and E/W")
    latitude = dm_to_sd(lat) * (-1 if ns == "S" else 1)
    longitude = dm_to_sd(lon) * (-1 if ew == "W" else 1)
    altitude = _float(alt) * (0.3048 if unit == "F" else 1.0)
    fix = {"tod": _tod(timestamp(hms)), "lat": latitude, "lon": longitude, "alt": altitude}
    dmy = dmy.split("*")[0]
    if dmy:
        fix["day"] = datetime.strptime(dmy, "%d%m%y").date()
    return fix


def _date_epochs(epochs: list[_Epoch]) -> int:
    """Give each undated epoch the date of the nearest dated one before it (else after), crossing midnight
    when the time of day goes back; returns how many stay undated (no dated sentence in the file)."""
    last_day: date | None = None
    last_tod = 0.0
    for e in epochs:
        if e.day is not None:
            last_day, last_tod = e.day, e.tod
        elif last_day is not None:
            if e.tod < last_tod - _DAY / 2:
                last_day += timedelta(days=1)
            e.day, last_tod = last_day, e.tod
    next_day: date | None = None
    next_tod = 0.0
    for e in reversed(epochs):
        if e.day is not None:
            next_day, next_tod = e.day, e.tod
        elif next_day is not None:
            if e.tod > next_tod + _DAY / 2:
                next_day -= timedelta(days=1)
            e.day, next_tod = next_day, e.tod
    return sum(1 for e in epochs if e.day is None and e.lat == e.lat)
