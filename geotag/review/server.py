"""The `geotag review` web server: standard library only, bound to 127.0.0.1, a secret token per session.

Why http.server: one person, one browser tab, a few requests a second; a threading server of the
standard library does that with no dependency. Security, since photos' locations are sensitive:
- it listens on 127.0.0.1 only, and refuses a Host header other than 127.0.0.1/localhost (DNS rebinding);
- the random token (secrets.token_urlsafe) is the only key to the data: the browser gets it from a
  private local file (app.py) that POSTs it to /login, or from the printed URL; either way the answer
  stores it in the tab's sessionStorage (per origin: this port only) and replaces the address with a
  clean `/`, so it is neither on a command line nor in the address bar or history;
- rows, photos and decisions need the token in a header (fetch from the page, compared in constant
  time), which no other page can send; a request whose Origin is another origin, or that a browser
  marks as not same-origin (Sec-Fetch-Site, e.g. an <img> on a page served from another local port),
  is refused;
- the cookie (HttpOnly, SameSite=Strict, named by the port) holds a *different* secret, because
  browsers send 127.0.0.1's cookies to every port there: it opens only the page shell and the map's
  static assets, never the rows or photos, so a server on another port that receives it learns nothing;
- photos are served by row index only, from the paths in the predictions file (no user path at all).
"""

from __future__ import annotations

import contextlib
import hmac
import html
import io
import json
import mimetypes
import secrets
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from geotag.errors import InputError
from geotag.eval import basemap, leaflet
from geotag.eval.basemap import Tiles
from geotag.review.page import page_html
from geotag.review.session import Session

HOST = "127.0.0.1"
COOKIE = "geotag_review_{port}"  # cookies ignore ports: two sessions at once must not share one
BROWSER_TYPES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
MAX_BODY = 64 * 1024
PHOTO_SIDE = 1600  # photos browsers cannot show (TIFF, HEIC, ..) are converted to a JPEG this large


class ReviewServer(ThreadingHTTPServer):
    """A server for one session; `url` carries the token."""

    daemon_threads = True

    def __init__(
        self, session: Session, port: int = 0, token: str | None = None, tiles: Tiles | None = None
    ) -> None:
        self.session = session
        self.tiles = tiles  # a tile server the page may load images from; None: the offline basemap
        self.token = token or secrets.token_urlsafe(32)
        self.cookie_secret = secrets.token_urlsafe(32)  # not the token: cookies reach every local port
        super().__init__((HOST, port), Handler)

    @property
    def cookie_name(self) -> str:
        return COOKIE.format(port=self.port)

    @property
    def origins(self) -> tuple[str, str]:
        return f"http://{HOST}:{self.port}", f"http://localhost:{self.port}"

    def login_file_html(self) -> str:
        """A page that POSTs the token to /login at once (for a local file the browser opens: the
        token stays off the browser's command line and out of every URL)."""
        return LOGIN_FORM.format(
            action=html.escape(f"http://{HOST}:{self.port}/login"), token=html.escape(self.token)
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def start_thread(self) -> threading.Thread:
        """Serve in a background thread (tests, and the CLI while it waits for Ctrl-C)."""
        t = threading.Thread(target=self.serve_forever, name="geotag-review", daemon=True)
        t.start()
        return t


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the terminal shows only what the CLI prints

    # --- checks ------------------------------------------------------------------------------------

    def _header_token_ok(self) -> bool:
        given = self.headers.get("X-Geotag-Token", "")
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    def _query_token_ok(self, query: dict[str, list[str]]) -> bool:
        want = self.server.token.encode()
        return any(hmac.compare_digest(g.encode(), want) for g in query.get("token", []))

    def _cookie_ok(self) -> bool:
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):  # a malformed cookie is simply no cookie
            cookie.load(self.headers.get("Cookie", ""))
        name = self.server.cookie_name
        return name in cookie and hmac.compare_digest(
            cookie[name].value.encode(), self.server.cookie_secret.encode()
        )

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        return host in (f"{HOST}:{self.server.port}", f"localhost:{self.server.port}")

    def _same_origin(self) -> bool:
        """Not sent by a page of another origin (another local port included): a browser's Origin and
        Sec-Fetch-Site headers, where present, must say this origin (a non-browser client sends neither)."""
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            return False
        return self.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")

    def _login(self) -> None:
        """The token was given (printed URL or the local login file): set the cookie, hand the token to
        the tab's sessionStorage and go to the clean `/` (location.replace: no history entry)."""
        cookie = f"{self.server.cookie_name}={self.server.cookie_secret}; HttpOnly; SameSite=Strict; Path=/"
        body = LOGIN_PAGE.replace("%TOKEN%", json.dumps(self.server.token).replace("<", "\\u003c")).encode()
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", {"Set-Cookie": cookie})

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        tiles = f" {self.server.tiles.origin}" if self.server.tiles else ""  # tile images only
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'self'; img-src 'self' blob:{tiles}; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        )
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, allow_nan=False).encode(), "application/json")

    def _deny(self, status: int = HTTPStatus.FORBIDDEN, why: str = "forbidden") -> None:
        self._send(status, why.encode() + b"\n", "text/plain; charset=utf-8")

    # --- routes ------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not self._host_ok():
            return self._deny(HTTPStatus.FORBIDDEN, "wrong host")
        path = parts.path
        if path == "/" and self._query_token_ok(query):
            return self._login()
        if not self._same_origin():
            return self._deny(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        if path in ("/api/rows",) or path.startswith("/photo/"):  # the data: the header token only
            if not self._header_token_ok():
                return self._deny(HTTPStatus.FORBIDDEN, "token required: open the URL geotag review printed")
        elif not (self._cookie_ok() or self._header_token_ok() or self._query_token_ok(query)):
            return self._deny(HTTPStatus.FORBIDDEN, "token required: open the URL geotag review printed")
        if path == "/":
            body = page_html(self.server.session.predictions.name, self.server.tiles).encode()
            return self._send(HTTPStatus.OK, body, "text/html; charset=utf-8")
        if path.startswith("/assets/"):
            name = path.removeprefix("/assets/")
            if name not in leaflet.ASSET_NAMES:
                return self._deny(HTTPStatus.NOT_FOUND, "not found")
            ctype = "text/css" if name.endswith(".css") else "text/javascript"
            return self._send(HTTPStatus.OK, leaflet.asset(name).encode(), f"{ctype}; charset=utf-8")
        if path == "/basemap.json":
            return self._send(HTTPStatus.OK, leaflet.basemap_geojson().encode(), "application/json")
        if path == "/labels.json":
            return self._send(HTTPStatus.OK, basemap.labels_json().encode(), "application/json")
        if path == "/api/rows":
            s = self.server.session
            with s.lock:
                rows = [s.summary(i) for i in range(len(s.rows))]
            return self._json(HTTPStatus.OK, {"rows": rows, "decisions_file": str(s.decisions_path)})
        if path.startswith("/photo/"):
            return self._photo(path.removeprefix("/photo/"))
        return self._deny(HTTPStatus.NOT_FOUND, "not found")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _photo(self, index_text: str) -> None:
        if not index_text.isdigit() or len(index_text) > 12:
            return self._deny(HTTPStatus.NOT_FOUND, "not found")
        photo = self.server.session.photo_path(int(index_text))
        if photo is None:
            return self._deny(HTTPStatus.NOT_FOUND, "photo not found")
        try:
            if photo.suffix.lower() in BROWSER_TYPES:
                data = photo.read_bytes()
                ctype = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
            else:
                data, ctype = _as_jpeg(photo), "image/jpeg"
        except Exception:  # noqa: BLE001 - an unreadable photo is a 404, never a crash
            return self._deny(HTTPStatus.NOT_FOUND, "photo cannot be read")
        self._send(HTTPStatus.OK, data, ctype)

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if not self._host_ok():
            return self._deny()
        if parts.path == "/login":
            return self._post_login()
        if not self._same_origin() or not self._header_token_ok():
            return self._deny()
        if parts.path != "/api/decide":
            return self._deny(HTTPStatus.NOT_FOUND, "not found")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._deny(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "JSON only")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._deny(HTTPStatus.BAD_REQUEST, "bad length")
        try:
            body = _loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise InputError("a JSON object please")
            d = self.server.session.decide(
                body.get("row"),
                str(body.get("action")),
                body.get("lat"),
                body.get("lon"),
                str(body.get("source") or "prediction"),
            )
        except (ValueError, InputError) as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except OSError as exc:
            return self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"not saved: {exc.strerror or exc}"}
            )
        self._json(
            HTTPStatus.OK,
            {"saved": True, "row": d.row, "action": d.action, "lat": d.lat, "lon": d.lon, "source": d.source},
        )

    def _post_login(self) -> None:
        """The local login file's form: `token=...` (from a file:// page its Origin is 'null')."""
        origin = self.headers.get("Origin")
        if origin is not None and origin not in (*self.server.origins, "null"):
            return self._deny()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= 4096:
            return self._deny(HTTPStatus.BAD_REQUEST, "bad length")
        form = parse_qs(self.rfile.read(length).decode("ascii", "replace"))
        if not self._query_token_ok(form):
            return self._deny(HTTPStatus.FORBIDDEN, "token required: open the URL geotag review printed")
        self._login()


def _loads(data: bytes) -> Any:
    """json.loads, with a nesting too deep for Python's parser (a 30,000-deep body) a ValueError."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


LOGIN_FORM = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geotag review</title></head>
<body><form id="login" method="post" action="{action}"><input type="hidden" name="token" value="{token}">
<noscript><button>Open geotag review</button></noscript></form>
<script>document.getElementById("login").submit();</script></body></html>
"""

LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geotag review</title></head>
<body>geotag review: signing in...
<script>sessionStorage.setItem("geotag-review-token", %TOKEN%); location.replace("/");</script>
</body></html>
"""


def _as_jpeg(photo: Any) -> bytes:
    from PIL import Image, ImageOps

    try:  # HEIC/AVIF, as geotag reads them elsewhere
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:
        pass
    from geotag.io.decode import fit_decode

    with Image.open(photo) as im:
        fit_decode(im, PHOTO_SIDE)  # JPEG draft; a decompression bomb is refused, not decoded
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return buf.getvalue()
