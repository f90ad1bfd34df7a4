"""A small threaded HTTP server on 127.0.0.1 for tests, able to misbehave on purpose.

Each served path has bytes and an optional script of faults, one used per request, after
which requests succeed::

    with FaultyServer() as srv:
        srv.add("/a.tar.gz", data, faults=["500", "cut", "slow"])
        url = srv.url("/a.tar.gz")
        ...
        assert srv.count("/a.tar.gz") == 4

Faults: ``"404"``/``"500"``/any status code (answer with that status), ``"cut"`` (send the
headers for the whole file, half the body, then close the connection), ``"slow"`` (wait
``slow_s`` seconds before answering), ``"norange"`` (ignore a Range header and send the
whole file with 200), ``"gzip-encoding"`` (claim ``Content-Encoding: gzip``). Range requests
are answered with 206 unless told otherwise. Nothing here ever talks to another host.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Resource:
    """Bytes served at one path and the faults still to play."""

    data: bytes
    faults: list[str] = field(default_factory=list)
    always: str | None = None


class FaultyServer:
    """Threaded HTTP server bound to 127.0.0.1 on a free port, counting requests per path."""

    def __init__(self, slow_s: float = 2.0) -> None:
        self.slow_s = slow_s
        self.resources: dict[str, Resource] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def add(self, path: str, data: bytes, faults: list[str] | None = None,
            always: str | None = None) -> str:
        """Serve ``data`` at ``path`` (faults played first, ``always`` on every request)."""
        with self._lock:
            self.resources[path] = Resource(data, list(faults or []), always)
        return self.url(path)

    def url(self, path: str) -> str:
        """Return the full URL of ``path`` on this server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def count(self, path: str | None = None) -> int:
        """Return how many GET requests reached ``path`` (all paths if None)."""
        with self._lock:
            return sum(1 for p, _, _ in self.log if path is None or p == path)

    def ranges(self, path: str) -> list[str | None]:
        """Return the Range header of each request to ``path`` (None when absent)."""
        with self._lock:
            return [r for p, _, r in self.log if p == path]

    def _next_fault(self, path: str) -> tuple[Resource | None, str | None]:
        with self._lock:
            res = self.resources.get(path)
            if res is None:
                return None, None
            fault = res.faults.pop(0) if res.faults else res.always
            return res, fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rng = self.headers.get("Range")
                with server._lock:
                    server.log.append((self.path, "GET", rng))
                res, fault = server._next_fault(self.path)
                if res is None:
                    return self._status(404)
                if fault and fault.isdigit():
                    return self._status(int(fault))
                if fault == "slow":
                    time.sleep(server.slow_s)
                start = 0
                match = re.match(r"bytes=(\d+)-$", rng or "")
                if match and fault != "norange" and int(match.group(1)) < len(res.data):
                    start = int(match.group(1))
                body = res.data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(res.data) - 1}/{len(res.data)}")
                if fault == "gzip-encoding":
                    self.send_header("Content-Encoding", "gzip")
                if fault == "cut":
                    self.send_header("Connection", "close")
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(body[: max(1, len(body) // 2)])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                return None

            def _status(self, code: int) -> None:
                body = f"status {code}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


# --------------------------------------------------------------------------- GEO-shaped tree


def listing_html(names: list[str]) -> bytes:
    """An HTTP directory index (as GEO's HTTPS server shows a folder) linking ``names``."""
    from urllib.parse import quote

    links = "".join(f'<a href="{quote(n)}">{n}</a>   2024-01-01 00:00   1K\n' for n in names)
    return (f'<html><head><title>Index</title></head><body><h1>Index</h1><pre>'
            f'<a href="?C=N;O=D">Name</a>\n<a href="/geo/">Parent Directory</a>\n{links}'
            '</pre></body></html>').encode()


def series_matrix(samples: list[dict], title: str = "a series") -> bytes:
    """A gzipped GEO series matrix. Each sample: ``gsm``, ``title``, ``organism``,
    ``characteristics`` (key -> value; one line per key, as GEO writes them) and
    ``files`` (ftp:// URLs of its supplementary files)."""
    import gzip

    def line(key: str, values: list[str]) -> str:
        return key + "".join(f'\t"{v}"' for v in values) + "\n"

    keys = list(dict.fromkeys(k for s in samples for k in s.get("characteristics", {})))
    n_files = max((len(s.get("files", [])) for s in samples), default=0)
    text = f'!Series_title\t"{title}"\n!Series_geo_accession\t"GSE0"\n'
    text += line("!Sample_title", [s["title"] for s in samples])
    text += line("!Sample_geo_accession", [s["gsm"] for s in samples])
    text += line("!Sample_source_name_ch1", [s.get("source", "tissue") for s in samples])
    text += line("!Sample_organism_ch1", [s["organism"] for s in samples])
    for key in keys:
        text += line("!Sample_characteristics_ch1",
                     [f"{key}: {s['characteristics'][key]}" if key in s.get("characteristics",
                                                                              {}) else ""
                      for s in samples])
    for i in range(n_files):
        text += line(f"!Sample_supplementary_file_{i + 1}",
                     [s["files"][i] if i < len(s.get("files", [])) else "NONE" for s in samples])
    text += '!series_matrix_table_begin\n"ID_REF"' + "".join(
        f'\t"{s["gsm"]}"' for s in samples) + "\n!series_matrix_table_end\n"
    return gzip.compress(text.encode())


def filelist_txt(archive: str, members: dict[str, bytes]) -> bytes:
    """GEO's filelist.txt describing ``archive`` and its members."""
    size = sum(len(v) for v in members.values())
    rows = ["#Archive/File\tName\tTime\tSize\tType",
            f"Archive\t{archive}\t01/01/2024 00:00:00\t{size}\tTAR"]
    rows += [f"File\t{name}\t01/01/2024 00:00:00\t{len(data)}\t"
             f"{name.rsplit('.', 2)[-2].upper() if name.endswith('.gz') else 'TXT'}"
             for name, data in members.items()]
    return ("\n".join(rows) + "\n").encode()


def serve_geo_series(srv: FaultyServer, accession: str, samples: list[dict], *,
                     raw_tar: bytes | None = None, raw_members: dict[str, bytes] | None = None,
                     sample_files: dict[str, bytes] | None = None, matrices: int = 1) -> str:
    """Serve a GEO series on ``srv`` under GEO's paths (``/geo/series/GSEnnn/GSE/...``):
    ``matrix/`` with its listing and series matrices (split over ``matrices`` platforms),
    ``suppl/`` with ``<GSE>_RAW.tar`` and ``filelist.txt`` when ``raw_tar`` is given, and
    each sample's own files (``/geo/samples/...``, ``sample_files``: URL path -> bytes).
    Returns the prefix to map ``https://ftp.ncbi.nlm.nih.gov`` to (``fetch.mirrors``)."""
    import re as _re

    base = f"/geo/series/{_re.sub(r'[0-9]{1,3}$', 'nnn', accession)}/{accession}"
    names = [f"{accession}_series_matrix.txt.gz"] if matrices == 1 else [
        f"{accession}-GPL{i}_series_matrix.txt.gz" for i in range(1, matrices + 1)]
    srv.add(f"{base}/matrix/", listing_html(names))
    for i, name in enumerate(names):
        srv.add(f"{base}/matrix/{name}", series_matrix(samples[i::matrices]))
    suppl = []
    if raw_tar is not None:
        suppl = [f"{accession}_RAW.tar", "filelist.txt"]
        srv.add(f"{base}/suppl/{accession}_RAW.tar", raw_tar)
        srv.add(f"{base}/suppl/filelist.txt",
                filelist_txt(f"{accession}_RAW.tar", raw_members or {}))
    srv.add(f"{base}/suppl/", listing_html(suppl))
    for path, data in (sample_files or {}).items():
        srv.add(path, data)
    return srv.url("").rstrip("/")
