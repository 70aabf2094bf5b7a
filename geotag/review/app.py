"""Start `geotag review`: open the session, bind the server, print the URL, serve until Ctrl-C."""

from __future__ import annotations

import errno
import shutil
import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path

from geotag.errors import InputError
from geotag.eval import basemap, leaflet
from geotag.eval.basemap import Tiles
from geotag.io.durable import write_new_file
from geotag.review.server import ReviewServer
from geotag.review.session import Session


def make_server(
    predictions: Path,
    decisions: Path | None = None,
    port: int = 0,
    columns: str | None = None,
    tiles: Tiles | None = None,
) -> ReviewServer:
    """The server, bound (port 0: a free one) but not yet serving; InputError with one line on failure.
    `columns`: the role=column mapping of someone else's predictions file (geotag.eval.foreign); `tiles`:
    a tile server the page may fetch its basemap from (else the offline one)."""
    if not 0 <= port <= 65535:
        raise InputError("--port must be between 0 and 65535")
    session = Session.open(predictions, decisions, columns)
    if not any(r.get("status") == "ok" for r in session.rows):
        raise InputError(f"{predictions}: no predictions to review")
    if tiles is None:  # built once now (about 3 s), not while the first page waits
        leaflet.basemap_geojson()
        basemap.labels_json()
    try:
        return ReviewServer(session, port, tiles=tiles)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} is in use: pick another with --port, or leave it out") from exc
        raise InputError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc


def write_login_file(server: ReviewServer) -> tuple[Path, Path]:
    """(private folder, file): a 0600 page in a fresh 0700 temp folder that POSTs the token to the
    server, for the browser to open (as Jupyter does): a command line is visible to every local user
    in `ps`, this file only to its owner. Removed when the server stops."""
    folder = Path(tempfile.mkdtemp(prefix="geotag-review-"))
    login = folder / "open-review.html"
    write_new_file(login, server.login_file_html().encode(), mode=0o600)
    return folder, login


def serve(server: ReviewServer, open_browser: bool, say: Callable[[str], None]) -> None:
    """Print where to go, open a browser unless told not to, serve until interrupted."""
    s = server.session
    done = len(s.decisions)
    say(f"reviewing {len(s.rows):,} row(s) of {s.predictions} ({done:,} decided so far)")
    say(f"decisions are saved to {s.decisions_path}")
    say(f"open {server.url}   (Ctrl-C to stop)")
    folder = None
    if open_browser:
        folder, login = write_login_file(server)
        webbrowser.open(login.as_uri())  # the token is in the private file, not on the browser's argv
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    say(
        f"{len(s.decisions):,} decision(s) in {s.decisions_path}; write them with: "
        f"geotag write-exif {s.predictions} --decisions {s.decisions_path}"
    )
