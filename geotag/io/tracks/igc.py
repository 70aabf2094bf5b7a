"""IGC flight logs through aerofiles' record decoder (aerofiles.igc.LowLevelReader).

B records give UTC time of day, position and GPS altitude (used only when the fix is 3-D, validity `A`,
as exiftool does); the date comes from the HFDTE / HFDTEDATE header, and a time of day that goes back
means the flight crossed midnight UTC. We drive aerofiles' low-level reader rather than its `Reader`
because `Reader` swallows a bad B record into a flag without its line number, and we need to name it.
A file without a date header has no usable fix (warning, as for a track without times).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from geotag.io.tracks._base import NAN, Builder, decode_text, fail, read_bounded


def read_igc(path: Path, name: str) -> Builder:
    from aerofiles.igc.reader import LowLevelReader

    text = decode_text(read_bounded(path), name)
    reader = LowLevelReader(io.StringIO(text))
    lines = io.StringIO(text).readlines()  # the same line split as the reader's
    b = Builder(name)
    day_start: float | None = None
    last_tod = -1.0
    for record_type, record, error in reader:
        line = reader.line_number
        if record_type == "H" and error is None and "utc_date" in record:
            day = record["utc_date"]
            if day is not None:
                day_start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
                last_tod = -1.0
            continue
        if record_type != "B":
            continue  # other records (and aerofiles' complaints about headers it does not know) are not used
        if error is not None:
            raise fail(name, f"line {line}", f"bad B record ({error})")
        raw = lines[line - 1] if line <= len(lines) else ""
        if raw[14:15] not in ("N", "S") or raw[23:24] not in (
            "E",
            "W",
        ):  # aerofiles reads any letter as N / E
            raise fail(name, f"line {line}", "bad B record (hemisphere is not N/S and E/W)")
        if day_start is None:
            b.untimed += 1
            continue
        t = record["time"]
        tod = t.hour * 3600 + t.minute * 60 + t.second
        if tod < last_tod - 43200:
            day_start += 86400.0  # back by more than half a day: past midnight UTC
        last_tod = tod
        alt = float(record["gps_alt"]) if record.get("validity") == "A" else NAN
        b.add(day_start + tod, record["lat"], record["lon"], alt=alt, record=line)
    return b
