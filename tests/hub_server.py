"""A test double of the Hugging Face Hub: the HTTP protocol the real ``huggingface_hub`` client
speaks for model repos, served on 127.0.0.1 from memory.

It implements what HFR uses, no more: who a token belongs to (``whoami``), create a repo, upload
(preupload, git-LFS batch / PUT / verify with ``HF_HUB_DISABLE_XET=1``, NDJSON commit), model
info, listing by author/search, and ``resolve`` downloads with ``X-Repo-Commit``, ``ETag`` /
``X-Linked-Etag`` and the Hub's ``X-Error-Code`` headers for missing repos, revisions and files.
Every commit is kept, so a pinned revision resolves to that commit's files. Requests it does not
know get 501 and are recorded in ``HubState.unknown_requests`` so a test can fail on them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".onnx", ".png", ".jpg")
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]  # path -> content (regular) or b"lfs:" + sha256 (LFS pointer)
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    unknown_requests: list[str] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=lambda: {"test-token": "hfr-tester"})  # by token
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find_commit(self, repo: Repo, revision: str) -> Commit | None:
        oid = repo.branches.get(revision, revision)
        return next((c for c in repo.commits if c.oid == oid), None)

    def content(self, stored: bytes) -> bytes:
        return self.lfs[stored[4:].decode()] if stored.startswith(b"lfs:") else stored


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return

    # --- plumbing ---
    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False
    ):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: object, headers: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str, message: str, head: bool = False, **extra) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, **extra}
        body = b"" if head else json.dumps({"error": message}).encode()
        self._send(status, body, {"Content-Type": "application/json", **headers}, head=head)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (
            repo.private and "authorization" not in {k.lower() for k in self.headers}
        ):
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return None
        return repo

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        for pattern, verb, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                with self.state.lock:
                    handler(self, query=query, **match.groupdict())
                return
        self.state.unknown_requests.append(f"{method} {self.path}")
        self._error(501, "NotImplemented", f"test Hub does not implement {method} {path}")

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    # --- endpoints ---
    def whoami(self, query: dict) -> None:
        authorization = self.headers.get("authorization", "")
        user = self.state.users.get(authorization.removeprefix("Bearer "))
        if user is None:
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return
        self._json(200, {"type": "user", "name": user, "auth": {"type": "access_token"}})

    def create_repo(self, query: dict) -> None:
        payload = json.loads(self._body())
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if payload.get("type", "model") not in (None, "model"):
            self._error(400, "BadRequest", "test Hub only hosts model repos")
            return
        url = f"http://{self.headers['Host']}/{repo_id}"
        if repo_id in self.state.repos:
            self._json(409, {"error": "You already created this model repo", "url": url})
            return
        repo = Repo(repo_id, bool(payload.get("private")))
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self._add_commit(repo, {".gitattributes": attributes}, "initial commit")
        self.state.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _add_commit(self, repo: Repo, files: dict[str, bytes], message: str) -> Commit:
        oid = hashlib.sha1(f"{repo.repo_id}{len(repo.commits)}{message}".encode()).hexdigest()
        commit = Commit(oid, files, message, _now())
        repo.commits.append(commit)
        repo.branches["main"] = oid
        return commit

    def preupload(self, query: dict, repo: str, revision: str) -> None:
        if self._repo(repo) is None:
            return
        files = json.loads(self._body())["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in files
        ]
        self._json(200, {"files": modes})

    def lfs_batch(self, query: dict, repo: str) -> None:
        if self._repo(repo) is None:
            return
        request = json.loads(self._body())
        base = f"http://{self.headers['Host']}"
        objects = []
        for obj in request["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{base}/lfs-storage/{obj['oid']}"},
                    "verify": {"href": f"{base}/lfs-verify"},
                }
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, query: dict, oid: str) -> None:
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            self._error(400, "BadRequest", "content does not match its sha256")
            return
        self.state.lfs[oid] = content
        self._send(200)

    def lfs_verify(self, query: dict) -> None:
        request = json.loads(self._body())
        stored = self.state.lfs.get(request["oid"])
        if stored is None or len(stored) != request["size"]:
            self._error(404, "EntryNotFound", "LFS object missing")
            return
        self._json(200, {"ok": True})

    def _repo_commit(
        self, repo_id: str, revision: str, head: bool = False
    ) -> tuple[Repo, Commit] | None:
        """The repo and the commit a revision names, or None after answering the Hub's 404."""
        repo = self._repo(repo_id, head=head)
        if repo is None:
            return None
        commit = self.state.find_commit(repo, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"no revision {revision}", head=head)
            return None
        return repo, commit

    def commit(self, query: dict, repo: str, revision: str) -> None:
        found = self._repo_commit(repo, revision)
        if found is None:
            return
        target, parent = found
        files, message = dict(parent.files), ""
        for line in self._body().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    return
                files[value["path"]] = b"lfs:" + value["oid"].encode()
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
        commit = self._add_commit(target, files, message)
        url = f"http://{self.headers['Host']}/{repo}/commit/{commit.oid}"
        self._json(200, {"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None})

    def validate_yaml(self, query: dict) -> None:
        """Like the Hub: the card's front matter must be a YAML mapping with a valid model-index."""
        import yaml
        from huggingface_hub.repocard_data import model_index_to_eval_results

        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(data, dict):
                raise ValueError("front matter is not a mapping")
            if "model-index" in data:
                model_index_to_eval_results(data["model-index"])
        except Exception as error:
            self._send(400, f"invalid model card metadata: {error}".encode())
            return
        self._json(200, {"errors": [], "warnings": []})

    def _info(self, repo: Repo, commit: Commit) -> dict:
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "lastModified": commit.date,
            "tags": _card_tags(self.state.content(commit.files.get("README.md", b""))),
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }

    def model_info(self, query: dict, repo: str, revision: str = "main") -> None:
        found = self._repo_commit(repo, revision)
        if found is not None:
            self._json(200, self._info(*found))

    def list_models(self, query: dict) -> None:
        author = query.get("author", [None])[0]
        search = query.get("search", [""])[0]
        found = [
            self._info(repo, self.state.find_commit(repo, "main"))
            for repo_id, repo in sorted(self.state.repos.items())
            if not repo.private
            and (author is None or repo_id.split("/")[0] == author)
            and search in repo_id.split("/")[1]
        ]
        self._json(200, found)

    def resolve(
        self, query: dict, repo: str, revision: str, filename: str, head: bool = False
    ) -> None:
        found = self._repo_commit(repo, revision, head=head)
        if found is None:
            return
        _, commit = found
        if filename not in commit.files:
            self._error(
                404, "EntryNotFound", "Entry not found", head=head, **{"X-Repo-Commit": commit.oid}
            )
            return
        stored = commit.files[filename]
        content = self.state.content(stored)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{_git_blob_sha(content)}"'}
        if stored.startswith(b"lfs:"):
            headers["X-Linked-Etag"] = f'"{stored[4:].decode()}"'
            headers["X-Linked-Size"] = str(len(content))
        if not head:
            self.state.downloads.append(f"{repo}@{commit.oid[:8]}/{filename}")
        self._send(200, content, headers, head=head)

    def resolve_head(self, query: dict, repo: str, revision: str, filename: str) -> None:
        self.resolve(query, repo, revision, filename, head=True)


def _card_tags(readme: bytes) -> list[str]:
    """The ``tags`` list of a model card's YAML front matter."""
    from huggingface_hub.repocard import RepoCard

    try:
        return list(RepoCard(readme.decode()).data.to_dict().get("tags") or [])
    except Exception:
        return []


ROUTES = [
    (r"/api/whoami-v2", "GET", HubHandler.whoami),
    (r"/api/repos/create", "POST", HubHandler.create_repo),
    (r"/api/validate-yaml", "POST", HubHandler.validate_yaml),
    (rf"/api/models/{REPO}/preupload/(?P<revision>.+)", "POST", HubHandler.preupload),
    (rf"/{REPO}\.git/info/lfs/objects/batch", "POST", HubHandler.lfs_batch),
    (r"/lfs-storage/(?P<oid>[0-9a-f]{64})", "PUT", HubHandler.lfs_put),
    (r"/lfs-verify", "POST", HubHandler.lfs_verify),
    (rf"/api/models/{REPO}/commit/(?P<revision>.+)", "POST", HubHandler.commit),
    (rf"/api/models/{REPO}/revision/(?P<revision>.+)", "GET", HubHandler.model_info),
    (rf"/api/models/{REPO}", "GET", HubHandler.model_info),
    (r"/api/models", "GET", HubHandler.list_models),
    (rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)", "GET", HubHandler.resolve),
    (rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)", "HEAD", HubHandler.resolve_head),
]


def start_hub(port: int = 0) -> tuple[ThreadingHTTPServer, HubState, str]:
    """Serve a fresh, empty Hub on 127.0.0.1 (port 0: any free one): (server, state, endpoint)."""
    state = HubState()
    handler = type("BoundHubHandler", (HubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state, f"http://127.0.0.1:{server.server_address[1]}"


if __name__ == "__main__":  # run by hand: python tests/hub_server.py
    import time

    _, _, endpoint = start_hub()
    print(f"test Hub listening on {endpoint}; set HF_ENDPOINT={endpoint} HF_HUB_DISABLE_XET=1")
    while True:
        time.sleep(3600)
