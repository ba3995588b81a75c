"""The Hugging Face Hub, read through huggingface_hub without transferring a weight byte.

- model_info: the commit, every file with its size, gated, license, parameter counts;
- hf_hub_download: the small files only (config, generation config, tokenizer files), into
  the standard HF cache;
- HTTP range reads of each safetensors shard's header (8 bytes, then the JSON header).

Why not `HfApi.get_safetensors_metadata`: it first reads 100 kB of every shard, which is
tensor data for all but the largest headers, and it re-checks which files exist with extra
requests that model_info has answered already. The range reads here use huggingface_hub's
own session, URLs and auth headers, so offline mode, HF_ENDPOINT and tokens behave the same.

Every Hub error becomes a ModelError naming the repo and saying what to do. The token is
never put into a message (redact() scrubs it from any text that came from elsewhere).
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TypeVar

from mergetui.engine.errors import ModelError
from mergetui.engine.sources import split_ref
from mergetui.engine.st_header import entries_from_header, header_length, parse_header_json
from mergetui.inspect import cache
from mergetui.inspect.facts import ModelFacts, TensorInfo, choose_weight_files, local_facts
from mergetui.inspect.tokenizer import read_tokenizer

T = TypeVar("T")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Small files read for a profile, in the order a tokenizer is best understood from.
PROFILE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.json",
)
MAX_WORKERS = 8


def hub_timeout() -> float:
    """Seconds to wait for the Hub to connect or answer ($MERGETUI_HUB_TIMEOUT, default 10)."""
    try:
        return float(os.environ.get("MERGETUI_HUB_TIMEOUT", "10"))
    except ValueError:
        return 10.0


def endpoint() -> str:
    """The Hub endpoint huggingface_hub talks to."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (checked the way huggingface_hub checks it)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def hf_cache_dir() -> Path:
    """The HF hub cache directory in use (HF_HOME / HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def snapshot_dir(repo_id: str, commit: str) -> Path:
    """Where the HF cache keeps files of `repo_id` at `commit`."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


# -- facts of one repo --------------------------------------------------------------------


def hub_facts(ref: str, *, refresh: bool = False, token: str | bool | None = None) -> ModelFacts:
    """Facts of Hub repo `org/name[@revision]`: from mergetui's cache when possible, else the Hub."""
    repo_id, rev = split_ref(ref)
    revision = rev or "main"
    offline = is_offline()
    refresh = refresh and not offline  # nothing to refresh from
    commit = revision if COMMIT_RE.match(revision) else None
    if commit is None and not refresh:
        commit = cache.lookup_ref(repo_id, revision, None if offline else cache.REF_TTL)
    if commit is None and offline:
        commit = _hf_cache_ref(repo_id, revision)
    if commit is not None and not refresh:
        cached = cache.load_facts(repo_id, commit)
        if cached is not None:
            facts = ModelFacts.from_dict(cached)
            facts.ref, facts.revision, facts.from_cache = ref, revision, True
            return facts
    if offline:
        return _offline_facts(ref, repo_id, revision, commit)
    with hub_errors(repo_id, revision):
        info = _model_info(repo_id, revision, token)
        commit = info.sha
        if not commit:
            raise ModelError(f"model {ref}: the Hub at {endpoint()} gave no commit for it", fix="check HF_ENDPOINT")
        cache.save_ref(repo_id, revision, commit)
        if not refresh and (cached := cache.load_facts(repo_id, commit)) is not None:
            facts = ModelFacts.from_dict(cached)
            facts.ref, facts.revision, facts.from_cache = ref, revision, True
            return facts
        facts = _remote_facts(ref, repo_id, revision, commit, info, token)
    cache.save_facts(repo_id, commit, facts.to_dict())
    return facts


def _model_info(repo_id: str, revision: str, token: str | bool | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi().model_info(
        repo_id, revision=None if revision == "main" else revision, files_metadata=True, timeout=hub_timeout(), token=token
    )


def _remote_facts(ref: str, repo_id: str, revision: str, commit: str, info: Any, token: str | bool | None) -> ModelFacts:
    files: dict[str, int | None] = {s.rfilename: s.size for s in (info.siblings or [])}
    if "config.json" not in files:
        raise ModelError(f"model {ref}: the repo has no config.json", fix="use a transformers model repo (this may be an adapter, GGUF or dataset repo)")
    facts = ModelFacts(ref=ref, kind="hub", repo_id=repo_id, revision=revision, commit=commit, files=files)
    facts.gated = info.gated
    facts.license = _license(info)
    facts.hub_parameters = dict(info.safetensors.parameters) if info.safetensors else None

    wanted = [f for f in PROFILE_FILES if f in files]
    if "tokenizer.json" not in files:  # slow tokenizers only: count their vocabulary instead
        wanted += [f for f in ("vocab.json", "tokenizer.model") if f in files][:1]
    wanted += [f for f in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if f in files]
    local = dict(zip(wanted, _parallel(lambda f: Path(download(repo_id, commit, f, token)), wanted)))
    facts.config = _json_object(local["config.json"], ref)
    gen = local.get("generation_config.json")
    facts.generation_config = _json_object(gen, ref) if gen else None
    facts.tokenizer = read_tokenizer(local)
    facts.weight_format, facts.weight_files = choose_weight_files(files, lambda n: _json_object(local[n], ref))
    if facts.weight_format == "safetensors":
        missing = [f for f in facts.weight_files if f not in files]
        if missing:
            raise ModelError(f"model {ref}: the index names {missing[0]} but the repo has no such file", fix="report it to the model's authors")
        headers = _parallel(lambda f: read_header(repo_id, commit, f, files.get(f), token), facts.weight_files)
        for part in headers:
            facts.tensors.update(part)
    return facts


def _json_object(p: Path, ref: str) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"model {ref}: {p.name} is not valid JSON ({e})", fix="report it to the model's authors") from None
    if not isinstance(data, dict):
        raise ModelError(f"model {ref}: {p.name} is not a JSON object")
    return data


def _license(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    lic = getattr(card, "license", None) if card is not None else None
    if isinstance(lic, str):
        return lic
    for tag in info.tags or []:
        if tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def _offline_facts(ref: str, repo_id: str, revision: str, commit: str | None) -> ModelFacts:
    """Facts from a snapshot in the HF cache, when offline and mergetui never saw this commit."""
    snap = snapshot_dir(repo_id, commit) if commit else None
    if snap is None or not (snap / "config.json").is_file():
        raise ModelError(
            f"model {ref}: not in the local cache, and HF_HUB_OFFLINE is set",
            fix="run the same command once online (unset HF_HUB_OFFLINE), or download the model first",
        )
    facts = local_facts(ref, snap, kind="hub")
    facts.repo_id, facts.revision, facts.commit, facts.root = repo_id, revision, commit, None
    if facts.weight_format == "safetensors" and not facts.tensors:
        raise ModelError(
            f"model {ref}: its weights are not in the local cache, and HF_HUB_OFFLINE is set",
            fix="run the same command once online (unset HF_HUB_OFFLINE)",
        )
    return facts


def _hf_cache_ref(repo_id: str, revision: str) -> str | None:
    p = hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "refs" / revision
    try:
        commit = p.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT_RE.match(commit) else None


# -- files and headers ----------------------------------------------------------------------


def download(repo_id: str, commit: str, filename: str, token: str | bool | None = None, *, quiet: bool = True) -> str:
    """hf_hub_download one file at a pinned commit into the HF cache; its local path."""
    from huggingface_hub import hf_hub_download

    from huggingface_hub.utils.tqdm import silent_tqdm

    kwargs: dict[str, Any] = {"tqdm_class": silent_tqdm} if quiet else {}
    return hf_hub_download(repo_id, filename, revision=commit, token=token, etag_timeout=hub_timeout(), **kwargs)


def cached_file(repo_id: str, commit: str, filename: str) -> Path | None:
    """The local path of a file if the HF cache holds it at `commit`."""
    p = snapshot_dir(repo_id, commit) / filename
    return p if p.is_file() else None


def read_header(repo_id: str, commit: str, filename: str, size: int | None, token: str | bool | None = None) -> dict[str, TensorInfo]:
    """TensorInfo per tensor of one safetensors file: from the HF cache, else two range reads."""
    from mergetui.engine.st_header import read_safetensors_header

    local = cached_file(repo_id, commit, filename)
    if local is not None:
        entries = read_safetensors_header(local, strict_dtypes=False)
    else:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(repo_id, filename, revision=commit)
        headers = build_hf_headers(token=token)
        where = f"{repo_id}/{filename}"
        hlen = header_length(_read_range(url, headers, 0, 8), where)
        header = parse_header_json(_read_range(url, headers, 8, hlen), where)
        entries = entries_from_header(header, Path(filename), 8 + hlen, size, strict_dtypes=False)
    return {n: TensorInfo(n, filename, e.dtype, e.shape, e.end - e.start) for n, e in entries.items()}


def _read_range(url: str, headers: dict[str, str], start: int, length: int) -> bytes:
    """Exactly bytes [start, start+length) of a remote file, never more (streamed, stops early)."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    if length <= 0:
        return b""
    h = {**headers, "Range": f"bytes={start}-{start + length - 1}"}
    with get_session().stream("GET", url, headers=h, timeout=hub_timeout()) as r:
        if r.status_code >= 400:
            r.read()
            hf_raise_for_status(r)
        skip = start if r.status_code == 200 else 0  # a server that ignored Range: skip ahead
        buf = bytearray()
        for chunk in r.iter_bytes():
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            buf += chunk
            if len(buf) >= length:
                break
    if len(buf) < length:
        raise ModelError(f"{url}: the Hub sent {len(buf)} of {length} header bytes", fix="try again; check HF_ENDPOINT")
    return bytes(buf[:length])


def missing_bytes(repo_id: str, commit: str, files: dict[str, int | None]) -> int:
    """Bytes of `files` (name -> size) that the HF cache does not hold at `commit`."""
    return sum(size or 0 for name, size in files.items() if cached_file(repo_id, commit, name) is None)


def _parallel(fn: Callable[[str], T], items: list[str]) -> list[T]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(MAX_WORKERS, len(items))) as ex:
        return list(ex.map(fn, items))


# -- search and the local cache ---------------------------------------------------------------


@dataclass(frozen=True)
class HubModel:
    """One search result."""

    repo_id: str
    downloads: int | None
    likes: int | None
    pipeline_tag: str | None
    library: str | None
    tags: tuple[str, ...]
    gated: str | bool | None
    last_modified: datetime | None
    parameters: int | None = None  # from the safetensors headers the Hub indexed


# Asking for `safetensors` (parameter counts) replaces the Hub's default fields, so every
# field shown is named.
_SEARCH_EXPAND = ("downloads", "likes", "pipeline_tag", "library_name", "tags", "gated", "lastModified", "safetensors")


def search_models(
    query: str | None = None,
    *,
    author: str | None = None,
    filter: str | list[str] | None = None,
    sort: str | None = "downloads",
    limit: int = 20,
    token: str | bool | None = None,
) -> list[HubModel]:
    """Search the Hub's models (GET /api/models: what HfApi.list_models sends).

    One request with a timeout: list_models retries five times with back-off and no timeout,
    which would freeze a search box for minutes when the Hub does not answer.
    """
    from huggingface_hub import constants
    from huggingface_hub.hf_api import ModelInfo
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    params: dict[str, Any] = {"limit": limit, "expand[]": list(_SEARCH_EXPAND)}
    if query:
        params["search"] = query
    if author:
        params["author"] = author
    if filter:
        params["filter"] = [filter] if isinstance(filter, str) else list(filter)
    if sort:
        params["sort"] = {"last_modified": "lastModified", "trending_score": "trendingScore", "created_at": "createdAt"}.get(sort, sort)
    with hub_errors(None, None):
        r = get_session().get(f"{constants.ENDPOINT}/api/models", params=params, headers=build_hf_headers(token=token), timeout=hub_timeout())
        hf_raise_for_status(r)
        items = r.json()
    out = []
    for item in items[:limit]:
        item.setdefault("siblings", None)
        m = ModelInfo(**item)
        total = getattr(m.safetensors, "total", None) if m.safetensors else None
        out.append(HubModel(m.id, m.downloads, m.likes, m.pipeline_tag, m.library_name, tuple(m.tags or ()), m.gated,
                            m.last_modified, total))
    return out


@dataclass(frozen=True)
class CachedRepo:
    """A model repo in the local HF cache."""

    repo_id: str
    size_on_disk: int
    commits: tuple[str, ...]
    refs: tuple[str, ...]
    last_accessed: float


def cached_repos() -> list[CachedRepo]:
    """Model repos in the HF cache (scan_cache_dir), most recently used first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache_dir())
    except (CacheNotFound, OSError):
        return []
    out = [
        CachedRepo(
            r.repo_id,
            r.size_on_disk,
            tuple(rev.commit_hash for rev in r.revisions),
            tuple(sorted(ref for rev in r.revisions for ref in rev.refs)),
            r.last_accessed,
        )
        for r in info.repos
        if r.repo_type == "model"
    ]
    return sorted(out, key=lambda c: c.last_accessed, reverse=True)


# -- errors -------------------------------------------------------------------------------------


def redact(text: str) -> str:
    """`text` with the Hub token (if any) replaced by '***'."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # a broken token file must not turn an error message into a crash
        token = None
    if token and token in text:
        text = text.replace(token, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{8,}\b", "hf_***", text)


class hub_errors:
    """Context manager turning huggingface_hub / HTTP errors into ModelErrors that say what to do."""

    def __init__(self, repo_id: str | None, revision: str | None) -> None:
        self.repo_id = repo_id
        self.revision = revision

    def __enter__(self) -> "hub_errors":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, ModelError) or not isinstance(exc, Exception):
            return False
        err = translate_error(exc, self.repo_id, self.revision)
        if err is None:
            return False
        raise err from None


def translate_error(exc: Exception, repo_id: str | None, revision: str | None = None) -> ModelError | None:
    """A ModelError for a huggingface_hub / network exception; None if it is not one."""
    import httpx2
    from huggingface_hub import errors as e

    what = f"model {repo_id}" if repo_id else "the Hub"
    where = endpoint()
    if isinstance(exc, e.GatedRepoError):
        has_token = _has_token()
        return ModelError(
            f"{what} is gated: "
            + ("your token has not been granted access to it" if has_token else "it needs a token from an account with access"),
            fix=f"accept its terms at {where}/{repo_id}, then "
            + ("wait for approval or use a token of the approved account" if has_token else "set HF_TOKEN or run `hf auth login`"),
        )
    if isinstance(exc, e.RevisionNotFoundError):
        return ModelError(f"{what}: no revision {revision!r} on {where}", fix="use a branch, tag or commit that exists (org/name@revision)")
    if isinstance(exc, e.RepositoryNotFoundError):
        return ModelError(
            f"{what}: no such repo on {where}",
            fix="check the spelling of org/name; for a private repo set HF_TOKEN or run `hf auth login`",
        )
    if isinstance(exc, e.RemoteEntryNotFoundError):
        return ModelError(f"{what}: a file it lists is missing on {where}", fix="try again later or pin another revision")
    if isinstance(exc, e.OfflineModeIsEnabled) or (isinstance(exc, e.LocalEntryNotFoundError) and is_offline()):
        return ModelError(f"{what}: not in the local cache, and HF_HUB_OFFLINE is set", fix="run the same command once online")
    if isinstance(exc, (httpx2.TimeoutException, e.LocalEntryNotFoundError)) or isinstance(exc, httpx2.NetworkError):
        kind = "no answer within %.0f s" % hub_timeout() if isinstance(exc, httpx2.TimeoutException) else "connection failed"
        return ModelError(
            f"cannot reach the Hub at {where} ({kind}) while reading {repo_id or 'search results'}",
            fix="check the network or HF_ENDPOINT; set HF_HUB_OFFLINE=1 to use only cached models",
        )
    if isinstance(exc, e.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return ModelError(f"{what}: the Hub at {where} answered HTTP {status}", fix="try again later; check HF_ENDPOINT and your token")
    if isinstance(exc, httpx2.HTTPError):
        return ModelError(f"{what}: HTTP error talking to {where}: {redact(str(exc))}", fix="check the network or HF_ENDPOINT")
    return None


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:
        return False

