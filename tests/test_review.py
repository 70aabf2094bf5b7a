"""`geotag review`'s server: bound to 127.0.0.1, token on every request, photos by row index only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from geotag.errors import InputError
from geotag.io import decisions
from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id
from geotag.review import app
from geotag.review.app import make_server
from geotag.review.server import ReviewServer


def make_preds(tmp_path: Path, n: int = 3) -> Path:
    """n synthetic JPEGs (no GPS) in two folders and a predictions file naming them, with candidates."""
    path = tmp_path / "preds.parquet"
    with PredictionWriter(path) as w:
        for i in range(n):
            photo = tmp_path / "photos" / ("a" if i % 2 == 0 else "b") / f"p{i}.jpg"
            photo.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (48, 32), (60 * i % 255, 100, 180)).save(photo, "JPEG")
            lat, lon = 10.0 + 5 * i, 20.0 + 5 * i
            w.write(
                {
                    "image_id": image_id(photo),
                    "path": str(photo),
                    "status": "ok",
                    "pred_lat": lat,
                    "pred_lon": lon,
                    "confidence": 0.2 + 0.3 * i,
                    "error_km": 80.0,
                    "model": "geoclip",
                    "country": "FR" if i % 2 == 0 else "DE",
                    "topk": [
                        {"lat": lat, "lon": lon, "score": 0.5},
                        {"lat": lat + 2, "lon": lon + 3, "score": 0.3},
                        {"lat": lat - 2, "lon": lon - 3, "score": 0.1},
                    ],
                }
            )
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReviewServer]:
    srv = make_server(make_preds(tmp_path))
    srv.start_thread()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def base(srv: ReviewServer) -> str:
    return f"http://127.0.0.1:{srv.port}"


def test_binds_to_loopback_only(server: ReviewServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
    assert len(server.token) >= 40
    # not on another interface of this machine
    other = socket.gethostbyname(socket.gethostname())
    if other != "127.0.0.1" and not other.startswith("127."):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{other}:{server.port}/", timeout=2)


def test_every_route_needs_the_token(server: ReviewServer) -> None:
    for route in ("/", "/api/rows", "/photo/0", "/assets/leaflet.js", "/basemap.json"):
        assert httpx.get(base(server) + route).status_code == 403, route
        assert httpx.get(base(server) + route, params={"token": "wrong" + server.token}).status_code == 403
        assert (
            httpx.get(base(server) + route, cookies={f"geotag_review_{server.port}": "nope"}).status_code
            == 403
        )
    r = httpx.post(base(server) + "/api/decide", json={"row": 0, "action": "reject"})
    assert r.status_code == 403
    assert not server.session.decisions_path.exists()


def test_token_in_url_then_cookie(server: ReviewServer) -> None:
    with httpx.Client(base_url=base(server)) as c:
        first = c.get("/", params={"token": server.token})
        assert first.status_code == 200 and "geotag review" in first.text
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        assert f"geotag_review_{server.port}=" in first.headers["set-cookie"]  # one per session
        # the login answer hands the token to the tab's sessionStorage and leaves for the clean URL
        assert "sessionStorage.setItem" in first.text and 'location.replace("/")' in first.text
        page = c.get("/")  # the cookie opens the page shell, which holds no token
        assert page.status_code == 200 and server.token not in page.text
        assert c.get("/assets/leaflet.js").status_code == 200
        h = {"X-Geotag-Token": server.token}
        rows = c.get("/api/rows", headers=h).json()["rows"]
        assert [r["i"] for r in rows] == [0, 1, 2] and rows[0]["topk"][1] == [12.0, 23.0, 0.3]
        photo = c.get("/photo/1", headers=h)
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert photo.content == Path(rows[1]["path"]).read_bytes()
        # the cookie does not authorise writes: the header token does
        assert c.post("/api/decide", json={"row": 0, "action": "reject"}).status_code == 403


def test_cookie_sent_to_another_local_port_opens_no_data(server: ReviewServer) -> None:
    """Issue 27 item 5: browsers send 127.0.0.1's cookies to every port there, so the cookie was the
    token itself and let any local server (or page on another port) read rows and photos. Now the
    cookie holds another secret that opens only the shell and static assets."""
    with httpx.Client(base_url=base(server)) as c:
        c.get("/", params={"token": server.token})
        cookie = c.cookies[f"geotag_review_{server.port}"]
        assert cookie != server.token and server.token not in cookie
        for route in ("/api/rows", "/photo/0"):
            assert c.get(route).status_code == 403, route
        assert c.post("/api/decide", json={"row": 0, "action": "reject"}).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:1"},  # a page served from another local port
        {"Origin": "http://localhost:8888"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "same-site"},  # an <img> or a fetch from another port of 127.0.0.1
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_requests_from_another_origin_are_refused(server: ReviewServer, headers: dict[str, str]) -> None:
    h = {"X-Geotag-Token": server.token, **headers}
    for route in ("/api/rows", "/photo/0", "/"):
        assert httpx.get(base(server) + route, headers=h).status_code == 403, route
    r = httpx.post(base(server) + "/api/decide", json={"row": 0, "action": "reject"}, headers=h)
    assert r.status_code == 403 and not server.session.decisions_path.exists()
    same = {"X-Geotag-Token": server.token, "Origin": base(server), "Sec-Fetch-Site": "same-origin"}
    assert httpx.get(base(server) + "/api/rows", headers=same).status_code == 200


def test_browser_opens_a_private_local_file_not_the_token_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 item 5: the token was on the browser's command line (`ps` shows it to every local
    user). The browser now opens a 0600 file in a 0700 folder that POSTs the token to /login."""
    srv = make_server(make_preds(tmp_path))
    opened: list[str] = []
    seen: dict[str, object] = {}

    def fake_open(url: str) -> bool:
        opened.append(url)
        path = Path(url.removeprefix("file://"))
        seen["file_mode"] = path.stat().st_mode & 0o777
        seen["dir_mode"] = path.parent.stat().st_mode & 0o777
        seen["html"] = path.read_text()
        seen["path"] = path
        return True

    def serve_forever(*args: object, **kwargs: object) -> None:
        html = str(seen["html"])
        assert f'action="http://127.0.0.1:{srv.port}/login"' in html
        form = {"token": html.split('name="token" value="')[1].split('"')[0]}
        with httpx.Client(base_url=base(srv)) as c:
            r = c.post("/login", data=form, headers={"Origin": "null"})  # a file:// page's Origin
            assert r.status_code == 200 and "sessionStorage" in r.text
            assert c.get("/").status_code == 200
            assert c.post("/login", data={"token": "x" + srv.token}).status_code == 403
            assert c.post("/login", data=form, headers={"Origin": "http://127.0.0.1:1"}).status_code == 403
        srv.shutdown()  # the real server thread
        raise KeyboardInterrupt

    monkeypatch.setattr(app.webbrowser, "open", fake_open)
    srv.start_thread()
    srv.serve_forever = serve_forever  # type: ignore[method-assign]
    app.serve(srv, open_browser=True, say=lambda _: None)
    assert len(opened) == 1 and opened[0].startswith("file://") and srv.token not in opened[0]
    assert seen["file_mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert not Path(str(seen["path"])).parent.exists()  # removed when the server stopped


def test_deeply_nested_json_body_is_one_400(server: ReviewServer) -> None:
    """Issue 27 item 8: a 30,000-deep JSON body raised RecursionError inside the handler (no answer)."""
    h = {"X-Geotag-Token": server.token, "Content-Type": "application/json"}
    body = b"[" * 30_000 + b"]" * 30_000
    r = httpx.post(base(server) + "/api/decide", content=body, headers=h)
    assert r.status_code == 400 and "deep" in r.json()["error"]
    assert httpx.get(base(server) + "/api/rows", headers=h).status_code == 200  # still serving


@pytest.mark.parametrize(
    "topk", [pa.array(["oops", None]), pa.array([[1.0, 2.0], []]), pa.array([[{"a": 1}], []])]
)
def test_wrongly_typed_topk_column_is_one_clear_message(tmp_path: Path, topk: pa.Array) -> None:
    """Issue 27 item 8: a `topk` column of the wrong type broke /api/rows; now review refuses the file
    with one line naming the column."""
    good = make_preds(tmp_path, n=2)
    table = pq.read_table(good).drop_columns(["topk"]).append_column("topk", topk)
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    with pytest.raises(InputError, match="column topk has type"):
        make_server(bad)
    r = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "review", str(bad), "--no-browser"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "column topk" in r.stderr


def test_wrong_host_header_is_refused(server: ReviewServer) -> None:
    r = httpx.get(base(server) + "/", params={"token": server.token}, headers={"Host": "evil.example:80"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "route",
    [
        "/photo/3",
        "/photo/-1",
        "/photo/..%2F..%2Fetc%2Fpasswd",
        "/photo/0/../../x",
        "/photo/%2Fetc%2Fpasswd",
        "/assets/../geotag/cli.py",
        "/etc/passwd",
        "/photo/",
    ],
)
def test_only_photos_of_the_predictions_are_served(server: ReviewServer, route: str) -> None:
    r = httpx.get(base(server) + route, headers={"X-Geotag-Token": server.token})
    assert r.status_code == 404, route


def test_decisions_are_saved_and_validated(server: ReviewServer) -> None:
    h = {"X-Geotag-Token": server.token}
    url = base(server) + "/api/decide"
    ok = httpx.post(
        url, json={"row": 1, "action": "accept", "lat": 1.5, "lon": 2.5, "source": "moved"}, headers=h
    )
    assert ok.status_code == 200 and ok.json()["saved"]
    for bad in (
        {"row": 9, "action": "reject"},
        {"row": "0", "action": "reject"},
        {"row": 0, "action": "accept", "lat": 91, "lon": 0},
        {"row": 0, "action": "burn"},
    ):
        assert httpx.post(url, json=bad, headers=h).status_code == 400, bad
    assert httpx.post(url, content=b"row=0", headers={**h, "Content-Type": "text/plain"}).status_code == 415
    saved = decisions.read(server.session.decisions_path)
    assert list(saved) == [1] and (saved[1].lat, saved[1].lon, saved[1].source) == (1.5, 2.5, "moved")
    assert saved[1].image_id == server.session.rows[1]["image_id"]


def test_reopening_resumes_the_decisions(tmp_path: Path) -> None:
    preds = make_preds(tmp_path)
    first = make_server(preds)
    first.session.decide(2, "reject")
    first.server_close()
    again = make_server(preds)
    try:
        assert again.session.summary(2)["decision"]["action"] == "reject"
        assert again.session.summary(0)["decision"] is None
    finally:
        again.server_close()


def test_port_option_and_port_in_use(tmp_path: Path) -> None:
    preds = make_preds(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(InputError, match="in use"):
            make_server(preds, port=busy)
    srv = make_server(preds, port=busy)  # free again: that port is used
    try:
        assert srv.port == busy
    finally:
        srv.server_close()


def test_cli_review_prints_the_url_and_does_not_open_a_browser(tmp_path: Path) -> None:
    preds = make_preds(tmp_path)
    env_browser = tmp_path / "browser-was-opened"
    proc = subprocess.Popen(
        [sys.executable, "-m", "geotag.cli", "review", str(preds), "--no-browser"],
        stderr=subprocess.PIPE,
        text=True,
        env={"BROWSER": f"touch {env_browser}", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
    )
    try:
        url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not url:
            line = proc.stderr.readline() if proc.stderr else ""
            if "http://127.0.0.1:" in line:
                url = line.split()[1]
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        assert httpx.get(url).status_code == 200
        assert not env_browser.exists()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_review_bad_input(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "review", str(tmp_path / "missing.parquet"), "--no-browser"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.strip()


def test_decisions_json_round_trip_is_plain(tmp_path: Path) -> None:
    srv = make_server(make_preds(tmp_path))
    try:
        srv.session.decide(0, "accept", 10.0, 20.0, "prediction")
        line = srv.session.decisions_path.read_text().splitlines()[0]
        assert json.loads(line)["action"] == "accept"
    finally:
        srv.server_close()
