"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving model folders built in the test.

It answers the two calls Parley's downloads make through huggingface_hub: the repository tree
(``/api/models/<repo>/tree/<rev>``: path, size, LFS sha256) and file downloads (``/<repo>/resolve/<rev>/<path>``,
HEAD and GET with Range). Faults can be injected per file: ``cut_after`` closes the connection after that many
bytes of the first GET (a dropped connection), ``wrong_sha256`` advertises another checksum.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubState:
    repos: dict[str, Path] = field(default_factory=dict)          # repo id -> folder
    cut_after: dict[str, int] = field(default_factory=dict)       # "repo/path" -> bytes before the cut (once)
    wrong_sha256: set[str] = field(default_factory=set)           # "repo/path"
    requests: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            return

        def _file(self):
            match = re.match(r"^/(.+?)/resolve/([^/]+)/(.+)$", unquote(urlparse(self.path).path))
            if not match:
                return None, None, None
            repo, _rev, rel = match.groups()
            folder = state.repos.get(repo)
            if folder is None or not (folder / rel).is_file():
                return repo, rel, None
            return repo, rel, folder / rel

        def _not_found(self) -> None:
            body = b'{"error": "Entry not found"}'
            self.send_response(404)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _headers(self, path: Path, repo: str, rel: str, length: int, status: int = 200,
                     content_range: str | None = None) -> None:
            sha = _sha256(path)
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(path.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            if content_range:
                self.send_header("Content-Range", content_range)
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802
            state.requests.append(f"HEAD {self.path}")
            repo, rel, path = self._file()
            if path is None:
                return self._not_found()
            self._headers(path, repo, rel, path.stat().st_size)

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(f"GET {self.path}")
            url = urlparse(self.path)
            tree = re.match(r"^/api/models/(.+?)/tree/([^/?]+)", unquote(url.path))
            if tree:
                return self._tree(tree.group(1))
            repo, rel, path = self._file()
            if path is None:
                return self._not_found()
            data = path.read_bytes()
            start = 0
            header = self.headers.get("Range")
            if header:
                state.ranges.append(f"{rel} {header}")
                start = int(re.match(r"bytes=(\d+)-", header).group(1))
                self._headers(path, repo, rel, len(data) - start, 206,
                              f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self._headers(path, repo, rel, len(data))
            key = f"{repo}/{rel}"
            cut = state.cut_after.pop(key, None)
            if cut is not None:
                self.wfile.write(data[start:start + cut])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            self.wfile.write(data[start:])

        def _tree(self, repo: str) -> None:
            folder = state.repos.get(repo)
            if folder is None:
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            entries = []
            for p in sorted(folder.rglob("*")):
                if not p.is_file():
                    continue
                rel = p.relative_to(folder).as_posix()
                sha = _sha256(p)
                if f"{repo}/{rel}" in state.wrong_sha256:
                    sha = "0" * 64
                entry = {"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size,
                         "path": rel}
                if p.suffix in (".safetensors", ".bin", ".gguf"):
                    entry["lfs"] = {"oid": sha, "size": p.stat().st_size, "pointerSize": 134}
                entries.append(entry)
            body = json.dumps(entries).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class LocalHub:
    """``with LocalHub() as hub: hub.add("org/name", folder); hub.endpoint`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, folder: Path) -> None:
        self.state.repos[repo] = Path(folder)

    def __enter__(self) -> "LocalHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
