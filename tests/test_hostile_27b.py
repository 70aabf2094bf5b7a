"""Issue 27 (items 3, 4, 7, 8): odd names, full disks, decompression bombs, markup and escapes in
messages, deep folders and JSON, globs, FIFOs. Each a row or one clear line, never a traceback."""

from __future__ import annotations

import errno
import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors import SafetensorError

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.errors import DiskFullError
from geotag.io.exif import read_exif
from geotag.io.pathtext import from_text, shown, to_text
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip
from geotag.sample_data import UNTAGGED, render

GEOTAG = [sys.executable, "-m", "geotag.cli"]
TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
ODD = b"caf\xe9 \x1b[31m.jpg"  # Latin-1, not UTF-8, with an escape sequence in it


def _jpeg(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render(UNTAGGED[0], (64, 48)).save(path, "JPEG", quality=85)
    return path


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("GEOTAG_DEBUG", None)
    return subprocess.run([*GEOTAG, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _odd_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "photos"
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/" + ODD))
    _jpeg(odd)
    _jpeg(folder / "plain.jpg")
    return folder, odd


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    gallery = tmp_path_factory.mktemp("gallery") / "gallery.csv"
    gallery.write_text("lat,lon\n" + "".join(f"{i - 40}.5,{3 * i - 100}.25\n" for i in range(80)))
    torch.manual_seed(0)
    return build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)


# --- item 3: file names that are not UTF-8 ---------------------------------------------------------------


def test_path_text_round_trips_any_name() -> None:
    for raw in (b"/a/caf\xe9.jpg", b"/a/\xff\xfe%41#b.jpg", b"/a/100%.jpg", "/a/café.jpg".encode()):
        name = os.fsdecode(raw)
        text = to_text(name)
        text.encode("utf-8")  # storable in Parquet
        assert os.fsencode(from_text(text)) == raw
    assert to_text("/a/café.jpg") == "/a/café.jpg"  # ordinary names are stored unchanged
    assert to_text(os.fsdecode(b"/a/caf\xe9.jpg")) == "file:///a/caf%E9.jpg"


def test_scan_gives_a_name_that_is_not_utf8_its_row(tmp_path: Path) -> None:
    folder, odd = _odd_folder(tmp_path)
    out = tmp_path / "scan.parquet"
    proc = _cli("scan", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr
    rows = pq.read_table(out, columns=["path", "status"]).to_pylist()
    assert sorted(os.fsencode(from_text(r["path"])) for r in rows) == sorted(
        os.fsencode(p.absolute()) for p in (odd, folder / "plain.jpg")
    )
    assert {r["status"] for r in rows} == {"ok"}


def test_predict_resume_write_exif_and_report_take_such_a_row(tmp_path: Path, tiny_model) -> None:
    folder, odd = _odd_folder(tmp_path)
    out = tmp_path / "preds.parquet"
    cfg = PredictConfig(paths=[folder], out=out, batch_size=4, workers=0)
    summary = run_predict(cfg, model=tiny_model)
    assert (summary.total, summary.failed) == (2, 0)
    rows = {from_text(r["path"]): r for r in pq.read_table(out).to_pylist()}
    assert rows[str(odd.absolute())]["status"] == "ok"
    again = run_predict(
        PredictConfig(paths=[folder], out=out, batch_size=4, workers=0, resume=True), tiny_model
    )
    assert (again.new, again.skipped) == (0, 2)  # the odd name is recognised as done

    result = run_write_exif(
        WriteOptions(out, journal=tmp_path / "j.jsonl", writer="python", min_confidence=0)
    )
    assert result.written == 2 and not result.failed, result
    assert read_exif(odd).gt_lat is not None

    report = _cli("report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert "\x1b" not in report.stderr


# --- item 4: a full disk ---------------------------------------------------------------------------------


class _Disk:
    """A disk of `free` bytes for every file geotag writes through a descriptor (os.fdopen 'wb'):
    past it a write fails with ENOSPC, as a real full disk does (Arrow passes the OSError on)."""

    def __init__(self, free: float) -> None:
        self.free, self.used = free, 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = os.fdopen

        def fdopen(fd: int, mode: str = "r", *args: object, **kw: object) -> object:
            fh = real(fd, mode, *args, **kw)
            return _FullFile(fh, self) if "w" in mode and "b" in mode else fh

        monkeypatch.setattr(os, "fdopen", fdopen)


class _FullFile(io.RawIOBase):
    def __init__(self, fh: io.BufferedWriter, disk: _Disk) -> None:
        self.fh, self.disk = fh, disk

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.disk.used + n > self.disk.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.used += n
        return self.fh.write(data)

    def tell(self) -> int:
        return self.fh.tell()

    def flush(self) -> None:
        if not self.fh.closed:
            self.fh.flush()

    def close(self) -> None:
        if not self.closed:
            self.fh.close()
            super().close()


def _no_temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".geotag-tmp")]


def test_full_disk_during_predict_leaves_whole_parts_and_resume_finishes(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    for i in range(9):
        _jpeg(folder / f"{i}.jpg")
    run_predict(_predict_cfg(folder, tmp_path / "warm.parquet"), model=tiny_model)  # caches filled
    measure = _Disk(float("inf"))
    with monkeypatch.context() as m:
        measure.install(m)
        run_predict(_predict_cfg(folder, tmp_path / "whole.parquet"), model=tiny_model)
    for share in (0.2, 0.5, 0.9):
        out = tmp_path / f"preds-{share}.parquet"
        with monkeypatch.context() as m:
            _Disk(share * measure.used).install(m)
            with pytest.raises(DiskFullError) as caught:
                run_predict(_predict_cfg(folder, out), model=tiny_model)
        message = str(caught.value)
        assert message.startswith("disk full writing ") and message.endswith(
            ": free space and run again with --resume"
        )
        assert not out.exists() and _no_temps(tmp_path) == []
        parts = out.with_name(out.name + ".parts")
        for part in parts.glob("part-*.parquet"):  # whole or absent
            assert 1 <= pq.read_table(part).num_rows <= 2
        summary = run_predict(_predict_cfg(folder, out, resume=True), model=tiny_model)
        assert summary.total == 9 and summary.failed == 0
        assert sorted(pq.read_table(out, columns=["path"]).column(0).to_pylist()) == sorted(
            str(p.absolute()) for p in folder.iterdir()
        )


def _predict_cfg(folder: Path, out: Path, **kw: object) -> PredictConfig:
    settings: dict[str, object] = {"batch_size": 2, "workers": 0, "checkpoint_rows": 2, **kw}
    return PredictConfig(paths=[folder], out=out, **settings)  # type: ignore[arg-type]


def test_full_disk_during_scan_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geotag.engine.scan import run_scan

    folder = tmp_path / "photos"
    for i in range(3):
        _jpeg(folder / f"{i}.jpg")
    out = tmp_path / "scan.parquet"
    out.write_bytes(b"the user's old scan")
    _Disk(1000).install(monkeypatch)
    with pytest.raises(DiskFullError, match=r"^disk full writing .*scan.parquet: free space and run again$"):
        run_scan([folder], out, workers=0)
    assert out.read_bytes() == b"the user's old scan" and _no_temps(tmp_path) == []


def test_full_disk_during_a_checkpoint_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """safetensors reports ENOSPC with its own exception type (text measured on a full tmpfs)."""
    import geotag.models.checkpoint as checkpoint

    def full(*_: object, **__: object) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    model = torch.nn.Linear(2, 2)
    target = tmp_path / "ckpt"
    with pytest.raises(DiskFullError, match="free space and run again with --resume"):
        checkpoint.save_checkpoint(target, lambda d: checkpoint.write_model_files(d, model, {}), {"step": 1})
    assert list(tmp_path.iterdir()) == []  # no half checkpoint, no temp folder


# --- item 7: decompression bombs -------------------------------------------------------------------------


def _png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid grey PNG of side x side zero pixels: 389 KB on disk, 400 MB decoded (1.2 GB as RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    rows = bytes(side + 1) * 1000  # filter byte + pixels, 1000 rows at a time
    idat = b"".join(z.compress(rows) for _ in range(side // 1000)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_decompression_bomb_is_refused_with_bounded_memory(png_bomb: Path, tmp_path: Path) -> None:
    """Before: 2.3 GB of peak RSS growth to decode this 389 KB file (3.4 GB in predict)."""
    code = f"""
import resource, sys
from pathlib import Path
from geotag.io.decode import decode_for_model
from geotag.eval.html_report import make_thumbnail
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_for_model({str(png_bomb)!r}, 224)
    print("decoded")
except Exception as exc:
    print("refused:", exc)
print("thumbnail:", make_thumbnail(Path({str(png_bomb)!r}), Path({str(tmp_path / "t.jpg")!r})))
print("growth_mb:", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["refused"].startswith("20000 x 20000 pixels (400 MP) is over the decode limit of 100 MP")
    assert lines["thumbnail"] == "None"
    assert float(lines["growth_mb"]) < 600


def test_a_bomb_in_predict_is_an_error_row(png_bomb: Path, tmp_path: Path, tiny_model) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bomb.png").symlink_to(png_bomb)
    _jpeg(folder / "fine.jpg")
    out = tmp_path / "preds.parquet"
    summary = run_predict(PredictConfig(paths=[folder], out=out, batch_size=4, workers=0), model=tiny_model)
    assert summary.failed == 1
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["fine.jpg"]["status"] == "ok"
    assert rows["bomb.png"]["status"] == "error" and "decode limit of 100 MP" in rows["bomb.png"]["error"]


def test_over_the_limit_a_jpeg_decodes_reduced_and_a_png_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geotag.io.decode as decode

    monkeypatch.setattr(decode, "DECODE_LIMIT_PIXELS", 1_000_000)
    big = render(UNTAGGED[0], (1600, 1200))
    big.save(tmp_path / "big.jpg", "JPEG", quality=90)
    big.save(tmp_path / "big.png")
    assert decode.load_rgb(tmp_path / "big.jpg").size == (800, 600)  # 1/2 scale: 0.48 MP
    assert decode.load_rgb(tmp_path / "big.jpg", min_side=200).size == (400, 300)  # 1/4: as before
    with pytest.raises(decode.ImageTooLarge, match="1600 x 1200 pixels"):
        decode.load_rgb(tmp_path / "big.png")


# --- item 8: one clear line instead of a traceback or a silent loss -------------------------------------


def test_json_in_a_script_element_cannot_end_or_escape_it() -> None:
    """A file named `<!--<script>.jpg` put the HTML parser into its double-escaped state: the rest of
    the page became script text and the map stayed blank. Every page embeds JSON through one helper."""
    import json

    from geotag.eval import map_page

    name = "/photos/<!--<script>.jpg"
    data = {"p": [name, "</script><b>x</b>&amp;"], "lat": [1.5, 2.5]}
    page = map_page.page_html("a <title>", data)
    start = page.index('<script id="rows" type="application/json">') + len(
        '<script id="rows" type="application/json">'
    )
    body = page[start : page.index("</script>", start)]
    assert not set(body) & set("<>&")
    assert json.loads(body) == data


def test_review_page_title_cannot_close_its_script() -> None:
    """The review page carries no token (it reaches the tab through the login file, issue 27 item 5); a
    title that tries to end the page's script is escaped text."""
    from geotag.review.page import page_html

    page = page_html("</script><!--")
    assert "</script><!--" not in page and "&lt;/script&gt;&lt;!--" in page


def test_markup_in_a_path_prints_as_text_in_error_lines(tmp_path: Path) -> None:
    for name in ("run [/]", "x[link=https://example.com]y[/link]", "[/x][bold red]z"):
        proc = _cli("scan", str(tmp_path / name), "--out", str(tmp_path / "s.parquet"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"error: {tmp_path / name}: no such file or folder", proc.stderr


def test_the_internal_error_line_has_no_literal_markup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import geotag.cli as cli

    def broken() -> None:
        raise RuntimeError("[/x] in data")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("GEOTAG_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert (
        err.startswith("internal error: RuntimeError: [/x] in data (please report it") and "[bold" not in err
    )


def test_control_characters_in_names_are_printed_escaped(tmp_path: Path) -> None:
    name = "evil\x1b]0;pwned\x07\x1b[2J\r.jpg"
    proc = _cli("scan", str(tmp_path / name), "--out", str(tmp_path / "s.parquet"))
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr and "\r" not in proc.stderr
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\r.jpg: no such file or folder" in proc.stderr
    assert shown(os.fsdecode(b"caf\xe9\x9b.jpg")) == "caf\\xe9\\x9b.jpg"


def test_a_folder_1000_levels_deep_is_walked(tmp_path: Path) -> None:
    """The recursive walk hit Python's recursion limit and lost the whole scan (exit 3)."""
    folder = tmp_path / "deep"
    levels = [folder]
    for _ in range(1000):
        levels.append(levels[-1] / "d")
    for level in levels:
        level.mkdir()
    try:
        _jpeg(levels[-1] / "bottom.jpg")
        _jpeg(folder / "top.jpg")
        out = tmp_path / "scan.parquet"
        proc = _cli("scan", str(folder), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        names = sorted(Path(p).name for p in pq.read_table(out, columns=["path"]).column(0).to_pylist())
        assert names == ["bottom.jpg", "top.jpg"]
    finally:  # shutil.rmtree (pytest's clean-up) recurses too: take the tree down level by level
        for level in reversed(levels):
            for child in level.iterdir():
                if not child.is_dir():
                    child.unlink()
            level.rmdir()


def _shard(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_shard_json_nested_100000_deep_is_an_error_row(tmp_path: Path) -> None:
    buf = io.BytesIO()
    render(UNTAGGED[0], (64, 48)).save(buf, "JPEG")
    shard = _shard(
        tmp_path / "00000.tar",
        {
            "000.jpg": buf.getvalue(),
            "000.json": b"[" * 100_000 + b"]" * 100_000,
            "001.jpg": buf.getvalue(),
            "001.json": b'{"latitude": 10.5, "longitude": 20.5}',
            "002.jpg": buf.getvalue(),
            "002.json": b"7",
        },
    )
    out = tmp_path / "scan.parquet"
    proc = _cli("scan", str(shard), "--out", str(out))
    assert proc.returncode == 1, proc.stderr  # some rows failed; the scan itself finished
    rows = {r["path"].rsplit("#", 1)[1]: r for r in pq.read_table(out).to_pylist()}
    assert rows["000"]["status"] == "error" and "000.json is not valid JSON" in rows["000"]["error"]
    assert rows["001"]["status"] == "ok" and rows["001"]["gt_lat"] == 10.5
    assert rows["002"]["status"] == "error" and "002.json is not a JSON object" in rows["002"]["error"]


def test_an_unreadable_subfolder_is_a_warning_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import geotag.io.scan as scan_io
    from geotag.engine.scan import run_scan

    folder = tmp_path / "photos"
    _jpeg(folder / "a.jpg")
    _jpeg(folder / "locked" / "b.jpg")
    real = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan_io.os, "scandir", scandir)
    summary = run_scan([folder], tmp_path / "scan.parquet", workers=1)
    assert (summary.total, summary.unreadable_folders) == (1, 1)
    assert f"cannot read folder {folder / 'locked'} (Permission denied)" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_subfolder_in_the_cli_summary(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _jpeg(folder / "a.jpg")
    _jpeg(folder / "locked" / "b.jpg")
    (folder / "locked").chmod(0)
    try:
        proc = _cli("scan", str(folder), "--out", str(tmp_path / "scan.parquet"))
    finally:
        (folder / "locked").chmod(0o755)
    assert proc.returncode == 1
    assert "WARNING: cannot read folder" in proc.stderr and "1 folder(s) could not be read" in proc.stderr


def test_a_fifo_or_device_named_explicitly_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/null"), "a device")):
        proc = _cli("scan", str(path), "--out", str(tmp_path / "scan.parquet"), timeout=60)
        assert proc.returncode == 2
        assert (
            proc.stderr.strip()
            == f"error: {path}: {kind}, not a photo or folder; give regular files or folders"
        )


def _preds_file(path: Path, n: int) -> Path:
    """A predictions file of `n` scored rows (no photos needed)."""
    from geotag.io.parquet import PredictionWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with PredictionWriter(path) as writer:
        for i in range(n):
            row = {"image_id": f"{path.name}-{i}", "path": f"/p/{i}.jpg", "status": "ok", "pred_lat": 1.0}
            writer.write(row | {"pred_lon": 2.0, "gt_lat": 1.0, "gt_lon": 2.0})
    return path


def test_glob_characters_in_an_existing_predictions_path_are_literal(tmp_path: Path) -> None:
    """`run [1]/preds.parquet` was read as the glob `run 1/preds.parquet` (another run's file)."""
    from geotag.eval.metrics import connect, evaluate
    from geotag.eval.report_data import open_sources
    from geotag.eval.report_data import query as report_query

    mine = _preds_file(tmp_path / "run [1]" / "preds.parquet", 3)
    _preds_file(tmp_path / "run 1" / "preds.parquet", 5)
    literal_star = _preds_file(tmp_path / "x*.parquet", 2)  # a real file named with a star
    _preds_file(tmp_path / "x1.parquet", 7)
    for path, n in ((mine, 3), (literal_star, 2)):
        result = evaluate([path])
        assert result.rows[0]["n_rows"] == n and not result.notes
    con = connect()
    (src,), notes = open_sources(con, [mine])
    assert report_query(con, src, "SELECT count(*) AS n FROM r")[0]["n"] == 3 and notes == []


def test_a_glob_the_user_asked_for_says_which_files_it_read(tmp_path: Path) -> None:
    from geotag.eval.metrics import evaluate

    a, b = _preds_file(tmp_path / "runs" / "a.parquet", 2), _preds_file(tmp_path / "runs" / "b.parquet", 3)
    result = evaluate([tmp_path / "runs" / "?.parquet"])
    assert result.rows[0]["n_rows"] == 5
    assert result.notes == [
        f"{tmp_path / 'runs' / '?.parquet'}: read 2 file(s) matching the pattern: {a}, {b}"
    ]


def test_full_disk_during_gallery_build_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gallery build` and `embed` write through AtomicParquetWriter subclasses with their own flush."""
    from geotag.io.embeddings import GalleryInfo, GalleryWriter

    out = tmp_path / "gallery.parquet"
    _Disk(3000).install(monkeypatch)
    rows = [{"image_id": str(i), "path": f"/p/{i}.jpg", "lat": 1.0, "lon": 2.0} for i in range(200)]
    with (
        pytest.raises(DiskFullError, match=r"gallery.parquet: free space and run again$"),
        GalleryWriter(out, GalleryInfo("b", "w", "f", 64)) as writer,
    ):
        writer.write(rows, torch.randn(200, 64))
    assert list(tmp_path.iterdir()) == []
