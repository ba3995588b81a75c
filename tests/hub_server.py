"""A small local stand-in for the Hugging Face Hub, for tests of the real huggingface_hub client.

It speaks the part of the Hub's HTTP API that huggingface_hub uses to read models:

- GET  /api/models                                  search (search, author, filter, sort, limit)
- GET  /api/models/{repo}[/revision/{rev}]          model info (?blobs=true adds file sizes / LFS)
- GET  /api/models/{repo}/tree/{rev}[/{path}]       file listing
- HEAD /{repo}/resolve/{rev}/{file}                 metadata: X-Repo-Commit, ETag, X-Linked-Etag/Size
- GET  /{repo}/resolve/{rev}/{file}                 content, honouring Range (206 + Content-Range)

and the part that HfApi.create_repo and upload_folder (without hf_xet: HF_HUB_DISABLE_XET=1)
use to write them:

- GET  /api/whoami-v2                               the token's user and organisations
- POST /api/repos/create                            new model repo (409 + url when it exists)
- POST /api/validate-yaml                           README front matter check (400 when invalid)
- POST /api/models/{repo}/preupload/{rev}           "regular" for every file, so no LFS/xet upload
- POST /api/models/{repo}/commit/{rev}              NDJSON commit: file (base64), deletedFile/Folder
- GET  /api/agent-harnesses                         an empty registry (huggingface_hub telemetry)

Writes need a token registered with `add_user` (401 without one or with an unknown one, 403
outside the user's namespaces); a commit becomes the branch's new revision, served by the
read endpoints at once, and the previous commit stays reachable by its sha. Private repos
are visible only to their namespace's users, as on the Hub.

Errors carry X-Error-Code like the Hub's (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). Gated repos accept only the tokens they were given. Every body byte sent is
counted, and bytes of weight data (anything past a safetensors header, any byte of a .bin)
are counted apart, so a test can assert that a check transferred no tensor data; request
bodies received (uploads) are counted too.

Repos are served from directories as they are on disk; large files are never hashed whole
(their ETag derives from header, size and mtime), so a sparse 7B-sized file costs nothing.

Use it as `HubServer()` (binds 127.0.0.1 on a free port at once) then `.start()`; set
HF_ENDPOINT to `.url` before huggingface_hub is imported.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hashlib
import json
import re
import shutil
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".msgpack", ".h5")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
HASH_LIMIT = 64 * 1024 * 1024  # files above this get a derived ETag instead of a full hash
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")  # the Hub's rule for repo and user names
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class ServedFile:
    """One file of a repo revision with the metadata the Hub reports for it."""

    path: str  # relative, with '/'
    disk: Path
    size: int
    lfs: bool
    etag: str  # git blob sha1, or sha256 for LFS files
    data_start: int  # first byte of tensor data (safetensors: 8 + header); 0 for other weights; size otherwise


@dataclass
class Revision:
    """A commit of a repo: its sha and files."""

    commit: str
    files: dict[str, ServedFile]


@dataclass
class Repo:
    """A served model repo."""

    repo_id: str
    revisions: dict[str, Revision]  # by branch name; each also reachable by its commit sha
    gated: str | bool = False  # False, "auto" or "manual"
    tokens: tuple[str, ...] = ()  # tokens granted access to a gated repo
    license: str | None = "apache-2.0"
    tags: list[str] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = "text-generation"
    last_modified: str = "2024-01-01T00:00:00.000Z"
    private: bool = False
    history: dict[str, Revision] = field(default_factory=dict)  # earlier commits of the branches, by sha

    def revision(self, rev: str) -> Revision | None:
        """The revision for a branch name or a commit sha (current or earlier)."""
        if rev in self.revisions:
            return self.revisions[rev]
        return next((r for r in self.revisions.values() if r.commit == rev), None) or self.history.get(rev)


@dataclass
class User:
    """A Hub account behind a token, with the organisations it may write to."""

    name: str
    token: str
    orgs: tuple[str, ...] = ()

    def namespaces(self) -> set[str]:
        """Where this user may create repos and commit."""
        return {self.name, *self.orgs}


@dataclass
class Counters:
    """What the server sent: requests, body bytes, and the part of them that was weight data."""

    requests: list[tuple[str, str, str | None, int, int]] = field(default_factory=list)  # method, path, range, status, bytes
    bytes_sent: int = 0
    tensor_bytes_sent: int = 0
    bytes_received: int = 0  # request bodies (uploads, JSON payloads)


class HubServer:
    """A Hub-compatible HTTP server on 127.0.0.1, run in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, User] = {}  # by token
        self.counters = Counters()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one commit at a time: a branch head moves atomically
        self._storage: Path | None = None  # where uploaded files are kept (created on first write)
        self._stored = 0
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (what HF_ENDPOINT should be)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        """Serve in a background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content -----------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        path: Path | str,
        *,
        revisions: dict[str, Path | str] | None = None,
        gated: str | bool = False,
        tokens: tuple[str, ...] | list[str] = (),
        license: str | None = "apache-2.0",
        tags: list[str] | None = None,
        downloads: int = 0,
        likes: int = 0,
    ) -> Repo:
        """Serve directory `path` as `repo_id` at revision main (plus other named `revisions`)."""
        dirs = {"main": Path(path), **{k: Path(v) for k, v in (revisions or {}).items()}}
        revs = {name: _scan_revision(repo_id, name, d) for name, d in dirs.items()}
        repo = Repo(
            repo_id,
            revs,
            gated=gated,
            tokens=tuple(tokens),
            license=license,
            tags=list(tags or []) + ["transformers", "safetensors"],
            downloads=downloads,
            likes=likes,
        )
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] | list[str] = ()) -> User:
        """Accept `token` for writes as user `name` (member of `orgs`); idempotent."""
        user = User(name, token, tuple(orgs))
        with self._lock:
            self.users[token] = user
        return user

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """Every file of a repo revision with its content (for asserting on uploads)."""
        revision = self.repos[repo_id].revision(rev)
        if revision is None:
            raise KeyError(f"{repo_id} has no revision {rev}")
        return {path: f.disk.read_bytes() for path, f in revision.files.items()}

    def _store(self, rel: str, data: bytes) -> ServedFile:
        """Write one uploaded file to the server's storage and describe it like a scanned one."""
        with self._lock:
            if self._storage is None:
                self._storage = Path(tempfile.mkdtemp(prefix="hub-server-"))
                atexit.register(shutil.rmtree, self._storage, True)
            self._stored += 1
            disk = self._storage / str(self._stored) / rel  # a fresh folder per file: revisions never share a path
        disk.parent.mkdir(parents=True, exist_ok=True)
        disk.write_bytes(data)
        st = disk.stat()
        lfs = rel.endswith(LFS_SUFFIXES) or st.st_size > 10 * 1024 * 1024  # served as the Hub would serve it
        return ServedFile(rel, disk, st.st_size, lfs, _etag(disk, st.st_size, st.st_mtime_ns, lfs), _data_start(disk, st.st_size))

    def _new_repo(self, repo_id: str, private: bool) -> Repo | None:
        """Create an empty repo (an initial commit with .gitattributes, as the Hub does); None if it exists."""
        gitattributes = self._store(".gitattributes", GITATTRIBUTES)
        commit = hashlib.sha1(f"{repo_id}\0initial\0{time.time_ns()}".encode()).hexdigest()
        repo = Repo(repo_id, {"main": Revision(commit, {".gitattributes": gitattributes})}, license=None, tags=[],
                    pipeline_tag=None, last_modified=_now(), private=private)
        with self._lock:
            if repo_id in self.repos:
                return None
            self.repos[repo_id] = repo
        return repo

    def _commit(self, repo: Repo, branch: str, adds: dict[str, bytes], deletes: list[tuple[str, bool]], summary: str,
                parent: str | None) -> Revision | tuple[int, str, str]:
        """Apply one commit to `branch`: the new revision, or (status, error code, message) when refused."""
        with self._write_lock:
            head = repo.revisions[branch]
            if parent and parent != head.commit:
                return 412, "", "A commit has happened since. Please refresh and try again."
            files = dict(head.files)
            for path, folder in deletes:
                gone = [p for p in files if p == path] if not folder else [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not gone:
                    return 404, "EntryNotFound", f"A file with this name doesn't exist: {path}"
                for p in gone:
                    del files[p]
            for path, data in adds.items():
                files[path] = self._store(path, data)
            digest = hashlib.sha1(f"{repo.repo_id}\0{head.commit}\0{summary}\0{time.time_ns()}\n".encode())
            for f in files.values():
                digest.update(f"{f.path}\0{f.size}\0{f.etag}\n".encode())
            new = Revision(digest.hexdigest(), files)
            repo.history[head.commit] = head  # still reachable by sha, like a git commit
            repo.revisions[branch] = new
            repo.last_modified = _now()
            return new

    def reset_counters(self) -> None:
        """Forget what was counted so far."""
        with self._lock:
            self.counters = Counters()

    def _count(self, method: str, path: str, rng: str | None, status: int, nbytes: int, tensor_bytes: int,
               received: int = 0) -> None:
        with self._lock:
            self.counters.requests.append((method, path, rng, status, nbytes))
            self.counters.bytes_sent += nbytes
            self.counters.tensor_bytes_sent += tensor_bytes
            self.counters.bytes_received += received


def _now() -> str:
    """The current time as the Hub writes it (lastModified)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _git_oid(path: Path) -> str:
    """The git blob sha1 of a file: what preupload reports so the client skips unchanged files."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _valid_path(path: str) -> bool:
    """A relative path in a repo: no empty, '.', '..' or .git parts."""
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..", ".git") for p in parts) and "\\" not in path


# -- repo scanning ---------------------------------------------------------------------------

_etag_cache: dict[tuple[str, int, int], str] = {}


def _scan_revision(repo_id: str, name: str, root: Path) -> Revision:
    files: dict[str, ServedFile] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        rel = p.relative_to(root).as_posix()
        st = p.stat()
        lfs = rel.endswith(LFS_SUFFIXES) or st.st_size > 10 * 1024 * 1024
        files[rel] = ServedFile(rel, p, st.st_size, lfs, _etag(p, st.st_size, st.st_mtime_ns, lfs), _data_start(p, st.st_size))
    digest = hashlib.sha1(repo_id.encode())
    for f in files.values():
        digest.update(f"{f.path}\0{f.size}\0{f.etag}\n".encode())
    digest.update(name.encode())
    return Revision(digest.hexdigest(), files)


def _etag(p: Path, size: int, mtime: int, lfs: bool) -> str:
    key = (str(p), size, mtime)
    if key in _etag_cache:
        return _etag_cache[key]
    if size > HASH_LIMIT:
        # Never read a (possibly sparse, multi-GB) file whole: a stable stand-in is enough.
        with open(p, "rb") as f:
            head = f.read(1 << 20)
        tag = hashlib.sha256(head + f"{size}:{mtime}".encode()).hexdigest()
    elif lfs:
        tag = hashlib.sha256(p.read_bytes()).hexdigest()
    else:
        data = p.read_bytes()
        tag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    _etag_cache[key] = tag
    return tag


def _data_start(p: Path, size: int) -> int:
    """Offset where tensor data begins; `size` when the file holds none."""
    if p.suffix == ".safetensors":
        try:
            with open(p, "rb") as f:
                (hlen,) = struct.unpack("<Q", f.read(8))
            return min(size, 8 + hlen)
        except (OSError, struct.error):
            return 0
    if p.suffix in WEIGHT_SUFFIXES:
        return 0
    return size


def _safetensors_params(rev: Revision) -> dict[str, int]:
    """Parameter count per dtype over the revision's safetensors files (model_info's `safetensors`)."""
    out: dict[str, int] = {}
    for f in rev.files.values():
        if not f.path.endswith(".safetensors"):
            continue
        with open(f.disk, "rb") as fh:
            (hlen,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(hlen))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in info["shape"]:
                n *= d
            out[info["dtype"]] = out.get(info["dtype"], 0) + n
    return out


# -- HTTP ------------------------------------------------------------------------------------


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        hub = server

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every reply sets Content-Length
    hub: HubServer
    _received = 0  # body bytes of the request being answered (counted with its reply)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        try:
            body = self._read_body()  # always, so the connection stays usable after an error reply
            self._received = len(body)
            if parts.path == "/api/repos/create":
                return self._create_repo(body)
            if parts.path == "/api/validate-yaml":
                return self._validate_yaml(body)
            # match before unquoting: a quoted revision may hold '/' (refs%2Fpr%2F1)
            m = re.fullmatch(rf"/api/models/{_REPO}/(?P<op>preupload|commit)/(?P<rev>[^/]+)", parts.path)
            if m:
                repo_id, rev = unquote(m["repo"]), unquote(m["rev"])
                if "create_pr" in query:
                    return self._error(400, "", "pull requests are not supported by this test Hub", False)
                if m["op"] == "preupload":
                    return self._preupload(repo_id, rev, body)
                return self._commit(repo_id, rev, body)
            self._error(404, "NotFound", f"no route for POST {parts.path}", False)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _read_body(self) -> bytes:
        """The request body, sent with Content-Length or chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    # -- routing ---------------------------------------------------------------------------

    def _route(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        try:
            self._received = 0
            if path == "/api/models":
                return self._search(query, head)
            if path == "/api/whoami-v2":
                return self._whoami(head)
            if path == "/api/agent-harnesses":  # huggingface_hub's telemetry asks this once a day
                return self._json({"standardEnvVars": [], "harnesses": {}}, head)
            m = re.fullmatch(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", path)
            if m:
                return self._tree(m["repo"], m["rev"], m["sub"] or "", head)
            m = re.fullmatch(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", path)
            if m:
                return self._info(m["repo"], m["rev"] or "main", query, head)
            m = re.fullmatch(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
            if m:
                return self._resolve(m["repo"], m["rev"], m["file"], head)
            self._error(404, "NotFound", f"no route for {path}", head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- replies ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool, *, tensor_bytes: int = 0) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)) if "Content-Length" not in headers else headers["Content-Length"])
        self.end_headers()
        sent = 0
        if not head and body:
            self.wfile.write(body)
            sent = len(body)
        received, self._received = self._received, 0
        self.hub._count(self.command, self.path, self.headers.get("Range"), status, sent, tensor_bytes if not head else 0,
                        received)

    def _json(self, data: Any, head: bool, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str, message: str, head: bool, headers: dict[str, str] | None = None) -> None:
        h = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json({"error": message}, head, status, h)

    def _repo(self, repo_id: str, head: bool) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is not None and not self._can_read(repo):
            repo = None  # a private repo is "not found" to anyone outside its namespace
        if repo is None:
            # The Hub answers 401 for unknown (or private) repos to anonymous callers.
            status = 404 if self._token() else 401
            self._error(status, "RepoNotFound", "Repository not found", head)
        return repo

    def _rev(self, repo: Repo, rev: str, head: bool) -> Revision | None:
        r = repo.revision(rev)
        if r is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        return r

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _can_read(self, repo: Repo) -> bool:
        if not repo.private:
            return True
        token = self._token()
        user = self.hub.users.get(token) if token else None
        return token in repo.tokens or (user is not None and repo.repo_id.split("/")[0] in user.namespaces())

    def _user(self, head: bool = False) -> User | None:
        """The registered user behind the request's token; otherwise a 401 is sent and None returned."""
        token = self._token()
        if token is None:
            self._error(401, "", "Invalid username or password.", head)
            return None
        user = self.hub.users.get(token)
        if user is None:
            # the message huggingface_hub tells apart from a missing repo
            self._error(401, "", "Invalid credentials in Authorization header", head)
        return user

    def _may_write(self, user: User, namespace: str) -> bool:
        """Whether `user` may write under `namespace`; otherwise a 403 is sent."""
        if namespace in user.namespaces():
            return True
        self._error(403, "", f"You don't have the rights to write to the namespace \"{namespace}\"", False)
        return False

    def _payload(self, body: bytes) -> dict[str, Any] | None:
        """A JSON object body; otherwise a 400 is sent and None returned."""
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._error(400, "", "expected a JSON object body", False)
            return None
        return data

    # -- endpoints ---------------------------------------------------------------------------

    def _search(self, q: dict[str, list[str]], head: bool) -> None:
        repos = [r for r in list(self.hub.repos.values()) if self._can_read(r)]
        if "search" in q:
            needle = q["search"][0].lower()
            repos = [r for r in repos if needle in r.repo_id.lower()]
        if "author" in q:
            repos = [r for r in repos if r.repo_id.split("/")[0] == q["author"][0]]
        for tag in q.get("filter", []):
            repos = [r for r in repos if tag in r.tags or tag == r.pipeline_tag]
        sort = (q.get("sort") or [None])[0]
        if sort in ("downloads", "likes"):
            repos.sort(key=lambda r: getattr(r, sort), reverse=True)
        elif sort in ("lastModified", "last_modified"):
            repos.sort(key=lambda r: r.last_modified, reverse=True)
        if "limit" in q:
            repos = repos[: int(q["limit"][0])]
        rows = [self._summary(r) for r in repos]
        if "safetensors" in q.get("expand[]", []):  # as the Hub: parameter counts on request
            for row, r in zip(rows, repos):
                rev = r.revision("main") or next(iter(r.revisions.values()), None)
                params = _safetensors_params(rev) if rev is not None else {}
                if params:
                    row["safetensors"] = {"parameters": params, "total": sum(params.values())}
        self._json(rows, head)

    def _summary(self, r: Repo) -> dict[str, Any]:
        return {
            "_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24],
            "id": r.repo_id,
            "modelId": r.repo_id,
            "likes": r.likes,
            "downloads": r.downloads,
            "private": r.private,
            "gated": r.gated,
            "tags": r.tags,
            "pipeline_tag": r.pipeline_tag,
            "library_name": "transformers",
            "lastModified": r.last_modified,
            "createdAt": r.last_modified,
        }

    def _info(self, repo_id: str, rev_name: str, q: dict[str, list[str]], head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        rev = self._rev(repo, rev_name, head)
        if rev is None:
            return
        blobs = (q.get("blobs") or ["false"])[0].lower() == "true"
        siblings = []
        for f in rev.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s.update(size=f.size, blobId=hashlib.sha1(f.etag.encode()).hexdigest())
                if f.lfs:
                    s["lfs"] = {"sha256": f.etag, "size": f.size, "pointerSize": 134}
            siblings.append(s)
        data = self._summary(repo)
        data.update(sha=rev.commit, siblings=siblings, disabled=False, spaces=[])
        if repo.license:
            data["cardData"] = {"license": repo.license}
            data["tags"] = data["tags"] + [f"license:{repo.license}"]
        cfg = rev.files.get("config.json")
        if cfg is not None:
            try:
                c = json.loads(cfg.disk.read_text())
                data["config"] = {k: c[k] for k in ("architectures", "model_type") if k in c}
            except ValueError:
                pass
        params = _safetensors_params(rev)
        if params:
            data["safetensors"] = {"parameters": params, "total": sum(params.values())}
        self._json(data, head)

    def _tree(self, repo_id: str, rev_name: str, sub: str, head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        rev = self._rev(repo, rev_name, head)
        if rev is None:
            return
        out = []
        for f in rev.files.values():
            if sub and not f.path.startswith(sub.rstrip("/") + "/"):
                continue
            e: dict[str, Any] = {"type": "file", "oid": hashlib.sha1(f.etag.encode()).hexdigest(), "size": f.size, "path": f.path}
            if f.lfs:
                e["lfs"] = {"oid": f.etag, "size": f.size, "pointerSize": 134}
            out.append(e)
        self._json(out, head)

    def _resolve(self, repo_id: str, rev_name: str, file: str, head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        if repo.gated:
            token = self._token()
            if token not in repo.tokens:
                status = 403 if token else 401
                msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in."
                return self._error(status, "GatedRepo", msg, head)
        rev = self._rev(repo, rev_name, head)
        if rev is None:
            return
        f = rev.files.get(file)
        if f is None:
            return self._error(404, "EntryNotFound", f"{file} does not exist on {rev_name}", head, {"X-Repo-Commit": rev.commit})
        headers = {
            "X-Repo-Commit": rev.commit,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.etag}"'
            headers["X-Linked-Size"] = str(f.size)
        start, end = 0, f.size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, f.size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{f.size}"
                return self._send(416, b"", headers, head)
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        length = max(0, end - start + 1)
        if head:
            headers["Content-Length"] = str(length)
            return self._send(status, b"", headers, True)
        with open(f.disk, "rb") as fh:
            fh.seek(start)
            body = fh.read(length)
        tensor_bytes = max(0, (start + len(body)) - max(start, f.data_start)) if len(body) else 0
        self._send(status, body, headers, False, tensor_bytes=tensor_bytes)


    # -- write endpoints -------------------------------------------------------------------

    def _whoami(self, head: bool) -> None:
        user = self._user(head)
        if user is None:
            return
        self._json({
            "type": "user",
            "name": user.name,
            "fullname": user.name,
            "orgs": [{"type": "org", "name": o} for o in user.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        }, head)

    def _create_repo(self, body: bytes) -> None:
        user = self._user()
        if user is None:
            return
        payload = self._payload(body)
        if payload is None:
            return
        if (payload.get("type") or "model") != "model":
            return self._error(400, "", "this test Hub serves model repos only", False)
        name, org = payload.get("name"), payload.get("organization") or user.name
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not isinstance(org, str):
            return self._error(400, "", f"Invalid repo name: {name!r}", False)
        if not self._may_write(user, org):
            return
        repo_id = f"{org}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        # clients send `visibility` now and `private` before; unset means public (the Hub's default)
        visibility = payload.get("visibility") or ("private" if payload.get("private") else "public")
        if self.hub._new_repo(repo_id, private=visibility == "private") is None:
            # the Hub answers 409 with the URL: create_repo(exist_ok=True) reads it from this body
            return self._json({"error": "You already created this model repo", "url": url}, False, 409,
                              {"X-Error-Message": "You already created this model repo"})
        self._json({"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]}, False)

    def _validate_yaml(self, body: bytes) -> None:
        import yaml

        payload = self._payload(body)
        if payload is None:
            return
        content = str(payload.get("content") or "")
        errors: list[str] = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end == -1:
                errors.append("the metadata block is not closed by a '---' line")
            else:
                try:
                    meta = yaml.safe_load(content[3:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append("metadata must be a YAML mapping")
                except yaml.YAMLError as e:
                    errors.append(f"invalid YAML: {str(e).splitlines()[0]}")
        self._json({"errors": [{"message": m} for m in errors], "warnings": []}, False, 400 if errors else 200)

    def _write_target(self, repo_id: str, rev: str) -> tuple[Repo, str] | None:
        """The repo and branch a write goes to, after auth (401/403) and lookups (404); None when refused."""
        user = self._user()
        if user is None:
            return None
        repo = self._repo(repo_id, False)
        if repo is None or not self._may_write(user, repo_id.split("/")[0]):
            return None
        if rev not in repo.revisions:  # writes go to a branch, never to a commit sha
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", False)
            return None
        return repo, rev

    def _preupload(self, repo_id: str, rev: str, body: bytes) -> None:
        target = self._write_target(repo_id, rev)
        if target is None:
            return
        payload = self._payload(body)
        if payload is None:
            return
        files = payload.get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
            return self._error(400, "", "expected {files: [{path, size, sample}]}", False)
        head = target[0].revisions[target[1]]
        out = []
        for f in files:
            have = head.files.get(f["path"])
            # "regular" for everything: the content rides in the commit itself (no LFS batch, no xet);
            # oid (git sha1) of a file already there lets the client skip unchanged files
            oid = _git_oid(have.disk) if have is not None and have.size <= HASH_LIMIT else None
            out.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": head.commit}, False)

    def _commit(self, repo_id: str, rev: str, body: bytes) -> None:
        target = self._write_target(repo_id, rev)
        if target is None:
            return
        repo, branch = target
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError:
            return self._error(400, "", "the commit body must be NDJSON", False)
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            return self._error(400, "", "the commit must start with a header line", False)
        header = lines[0].get("value")
        summary = str(header.get("summary") or "") if isinstance(header, dict) else ""
        if not summary:
            return self._error(400, "", "the commit needs a summary", False)
        adds: dict[str, bytes] = {}
        deletes: list[tuple[str, bool]] = []
        for op in lines[1:]:
            key = op.get("key") if isinstance(op, dict) else None
            value = op.get("value") if isinstance(op, dict) else None
            path = value.get("path") if isinstance(value, dict) else None
            if not isinstance(path, str) or not _valid_path(path.rstrip("/") if key == "deletedFolder" else path):
                return self._error(400, "", f"invalid path in commit operation: {path!r}", False)
            if key == "file":
                content = str(value.get("content") or "")
                try:
                    adds[path] = base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
                except (binascii.Error, ValueError):
                    return self._error(400, "", f"{path}: content is not valid base64", False)
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append((path, key == "deletedFolder"))
            elif key == "lfsFile":
                # preupload never answers "lfs", so no LFS object was uploaded: the Hub refuses this too
                return self._error(400, "", f"{path}: LFS object {value.get('oid')} was never uploaded", False)
            else:
                return self._error(400, "", f"unknown commit operation {key!r}", False)
        result = self.hub._commit(repo, branch, adds, deletes, summary, header.get("parentCommit"))
        if isinstance(result, tuple):
            return self._error(*result, False)
        self._json({
            "success": True,
            "commitOid": result.commit,
            "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{result.commit}",
            "hookOutput": "",
        }, False)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single `bytes=` range, or None if unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix range: the last N bytes
        n = int(m[2])
        return (max(0, size - n), size - 1) if n and size else None
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """Write a valid safetensors file whose data region is a hole (sparse); return its size."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n * sizes[dtype]]}
        pos += n * sizes[dtype]
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js)
        f.truncate(8 + len(js) + pos)
    return 8 + len(js) + pos

