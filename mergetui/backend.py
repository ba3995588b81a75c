"""The workbench's calls into engine/ and inspect/: one thin function per question a view asks.

Screens call these from thread workers only (they read files, may import torch, may use the
network). Each is a small adapter, so when inspect/ grows a richer API the change is here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergetui.engine.config import MergeConfig
from mergetui.engine.errors import MergeError

SORTS = {"downloads": "downloads", "likes": "likes", "trending": "trending_score", "recent": "last_modified"}


@dataclass(frozen=True)
class HubRow:
    """One model in a search result or a local listing."""

    id: str
    parameters: int | None = None
    downloads: int | None = None
    likes: int | None = None
    updated: str = ""
    gated: str = ""
    path: str = ""  # local models: the directory


@dataclass(frozen=True)
class Finding:
    """A compatibility finding: level is error (blocks the merge), warning or info."""

    level: str
    message: str
    fix: str = ""
    code: str = ""  # inspect's stable finding code


@dataclass
class Profile:
    """What is known about a model without its weights."""

    ref: str
    props: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    layers: int = 0
    layer_params: int = 0  # parameters of one decoder layer
    other_params: int = 0  # embeddings, norms, head
    error: str = ""
    source: Any = field(default=None, repr=False)  # the inspect.profile.Profile


# ---- Hub and local listings -------------------------------------------------------------------
def search_hub(query: str = "", author: str = "", sort: str = "downloads", text_generation: bool = True,
               limit: int = 50) -> list[HubRow]:
    """Search the Hub (HF_ENDPOINT honoured, one request with a timeout); raises ModelError when it fails."""
    from mergetui.inspect.hub import search_models

    found = search_models(query or None, author=author or None, filter="text-generation" if text_generation else None,
                          sort=SORTS.get(sort, sort), limit=limit)
    return [HubRow(id=m.repo_id, parameters=getattr(m, "parameters", None), downloads=m.downloads, likes=m.likes,
                   updated=m.last_modified.strftime("%Y-%m-%d") if m.last_modified else "",
                   gated="" if not m.gated else str(m.gated)) for m in found]


def local_models(extra_dirs: list[str]) -> list[HubRow]:
    """Models in the HF cache plus model directories in (or directly under) `extra_dirs`."""
    from mergetui.inspect.hub import cached_repos

    rows = [HubRow(id=r.repo_id, updated=_date(r.last_accessed), path=f"HF cache, {r.size_on_disk / 1e9:.1f} GB")
            for r in cached_repos()]
    for d in extra_dirs:
        root = Path(os.path.expanduser(d))
        candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
        for p in candidates:
            if (p / "config.json").is_file():
                rows.append(HubRow(id=str(p), updated=_date(p.stat().st_mtime), path=str(p)))
    return rows


def _date(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d", time.localtime(ts))


# ---- profiles and compatibility ---------------------------------------------------------------
def load_profile(ref: str) -> Profile:
    """A model's profile (inspect.profile) in the rows the views show; errors kept inside."""
    try:
        from mergetui.inspect.profile import profile_model

        return profile_rows(profile_model(ref))
    except Exception as e:  # a profile that failed still shows, with its reason
        return Profile(ref=ref, error=describe_error(e))


def profile_rows(p: Any) -> Profile:
    """The workbench's view of an inspect Profile: ordered properties, shapes, layer sizes."""
    dtypes = ",".join(sorted(p.dtypes)) or "?"
    props: dict[str, Any] = {
        "architecture": ",".join(p.architectures) or "?",
        "model type": p.model_type or "?",
        "layers": _q(p.layers),
        "hidden size": _q(p.hidden_size),
        "intermediate size": _q(p.intermediate_size),
        "attention heads": _q(p.num_heads),
        "kv heads": _q(p.num_kv_heads),
        "vocab size": _q(p.vocab_size),
        "embedding rows": _q(p.embed_rows),
        "added tokens": len(p.added_tokens),
        "tied embeddings": p.tied_embeddings if p.tied_embeddings is not None else "?",
        "dtype": dtypes,
        "parameters": _q(p.parameters),
        "max positions": _q(p.max_positions),
        "rope theta": _q(p.rope_theta),
    }
    shapes = {n: tuple(t.shape) for n, t in p.tensors.items()}
    layers = p.layers or 0
    prefix = f"{p.layer_prefix}.0." if p.layer_prefix else None
    layer_params = sum(_numel(s) for n, s in shapes.items() if prefix and n.startswith(prefix))
    total = p.parameters or sum(_numel(s) for s in shapes.values())
    return Profile(p.ref, props, shapes, layers, layer_params, max(0, total - layer_params * layers), source=p)


def _q(v: Any) -> Any:
    return "?" if v is None else v


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# properties that must agree for tensor-by-tensor methods; "layers" only when not stacking slices
_BLOCKING = ("architecture", "hidden size", "intermediate size", "attention heads", "kv heads", "embedding rows", "layers")
_WARNING = ("model type", "vocab size", "added tokens", "tied embeddings", "dtype", "max positions", "rope theta")


def property_level(prop: str, method: str, values: list[Any], aligned: bool = False) -> str:
    """'' when the values agree, else 'error' (blocks `method`) or 'warning' — the Compare colours.

    `aligned`: the recipe sets a tokenizer source, so embedding rows are matched by token.
    """
    if len({repr(v) for v in values}) <= 1:
        return ""
    stacking = method == "passthrough"
    if prop == "layers" and stacking:
        return ""  # frankenmerges stack slices of different depths
    if prop == "embedding rows" and (stacking or aligned or method == "moe"):
        return "warning"  # only some models' embeddings are used, or rows are aligned by token
    if prop in _BLOCKING:
        return "error"
    return "warning" if prop in _WARNING else ""


def check_profiles(profiles: list[Profile], config: MergeConfig | None) -> list[Finding]:
    """inspect's findings for the bench, read against the recipe when there is one."""
    from mergetui.inspect.findings import find_issues

    out = [Finding("error", f"{p.ref}: {p.error}", "check the path or repo id") for p in profiles if p.error]
    good = [p.source for p in profiles if not p.error and p.source is not None]
    if len(good) < 2:
        return out
    refs = {p.ref for p in good}
    if config is not None and not set(config.referenced_models()) <= refs:
        config = None  # the recipe names models not (yet) profiled: compare the bench alone
    try:
        found = find_issues(good, config)
    except Exception as e:  # a rule tripping over an odd profile must not take the view down
        return out + [Finding("warning", f"could not compare: {describe_error(e)}")]
    return out + [Finding(f.severity, f.message, f.fix or "", f.code) for f in found]


def tensor_differences(profiles: list[Profile]) -> list[tuple[str, list[tuple[int, ...] | None]]]:
    """Tensors whose name is missing in some model or whose shapes differ, with each model's shape."""
    good = [p for p in profiles if not p.error]
    names: dict[str, None] = {}
    for p in good:
        names.update(dict.fromkeys(p.tensors))
    out = []
    for n in names:
        shapes = [p.tensors.get(n) for p in good]
        if len(set(shapes)) > 1:
            out.append((n, shapes))
    return out


# ---- preflight and publishing --------------------------------------------------------------
@dataclass
class Preflight:
    """What the Run view shows before a merge starts."""

    summary: dict[str, Any] = field(default_factory=dict)
    download_bytes: int = 0
    output_bytes: int = 0
    peak_ram: int = 0
    peak_vram: int = 0
    free_disk: int | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str = ""


def preflight(cfg: Any, out_dir: str) -> Preflight:
    """inspect's check of the recipe plus the engine's plan; a problem is returned, not raised."""
    from mergetui.engine.moe.config import MoEConfig
    from mergetui.inspect.check import check_config

    if isinstance(cfg, MoEConfig):
        return moe_preflight(cfg, out_dir)
    pf = Preflight()
    try:
        report = check_config(cfg, out_dir=out_dir)
    except Exception as e:
        pf.error = describe_error(e)
        return pf
    pf.findings = [Finding(f.severity, f.message, f.fix or "", f.code) for f in report.findings]
    est = report.estimate
    if est is not None:
        pf.download_bytes, pf.output_bytes = est.download_bytes, est.output.nbytes
        pf.peak_ram, pf.peak_vram, pf.free_disk = est.peak_ram, est.peak_vram, est.out_free
    try:
        from mergetui.engine.plan import build_plan

        plan = build_plan(cfg)  # what `mergetui merge` will do: its errors are the ones that stop a merge
    except Exception as e:
        pf.error = describe_error(e)
        return pf
    pf.summary = plan.summary()
    pf.output_bytes = plan.total_bytes
    return pf


def moe_preflight(cfg: Any, out_dir: str) -> Preflight:
    """What `mergetui moe` will do with a MoEConfig: its refusal, or the plan's totals and warnings."""
    import shutil

    from mergetui.moe_recipe import moe_problem, moe_warnings

    pf = Preflight()
    problem = moe_problem(cfg)
    if problem:
        pf.error = problem
        return pf
    try:
        from mergetui.engine.moe.plan import build_moe_plan

        plan = build_moe_plan(cfg)  # configs and headers only, like the merge plan
    except Exception as e:
        pf.error = describe_error(e)
        return pf
    pf.findings = [Finding("warning", w) for w in dict.fromkeys(plan.warnings + moe_warnings(cfg))]
    elements = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
    params = sum(t.nbytes // elements.get(t.dtype, 1) for t in plan.tensors)
    pf.summary = {"method": f"moe ({plan.family.name}, {len(cfg.experts)} experts, {cfg.experts_per_token} per token)",
                  "output_layers": plan.num_layers, "parameters": params, "tensors": len(plan.tensors)}
    pf.output_bytes = plan.total_bytes
    largest = max((t.nbytes for t in plan.tensors), default=0)
    # tensors are copied one at a time; gate_mode hidden also runs the base model (float32) once
    base_bytes = sum(t.nbytes for t in plan.tensors if t.model == cfg.base_model) if cfg.gate_mode == "hidden" else 0
    pf.peak_ram = (600 << 20) + 3 * largest + base_bytes * 2
    where = Path(os.path.expanduser(out_dir)).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        pf.free_disk = shutil.disk_usage(where).free
    except OSError:
        pf.free_disk = None
    if pf.free_disk is not None and pf.output_bytes > pf.free_disk:
        pf.findings.insert(0, Finding("error", f"not enough disk for the output: {pf.output_bytes / 1e9:.2f} GB needed, "
                                               f"{pf.free_disk / 1e9:.2f} GB free", "choose another output directory", "disk-short"))
    return pf


class PushError(MergeError):
    """Pushing to the Hub failed for a reason the user can fix: login, permissions, repo name, card metadata."""


_LOGIN = "run `hf auth login` with a token that has write access (or set HF_TOKEN)"


def push_to_hub(out_dir: str, repo_id: str, private: bool = True) -> str:
    """Create the repo (if needed) and upload the merged folder; returns the repo URL; raises PushError."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if not Path(out_dir).is_dir():
        raise PushError(f"nothing to push: {out_dir} is not a directory")
    if get_token() is None:  # say so before any request: the Hub's answer would only be a bare 401
        raise PushError("not logged in to the Hugging Face Hub", fix=_LOGIN)
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        # a bare name is created under the token's user: upload to the id the Hub gave it
        api.upload_folder(folder_path=out_dir, repo_id=url.repo_id or repo_id, commit_message="Upload merged model (mergetui)")
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401 and not isinstance(e, RepositoryNotFoundError):
            raise PushError("the Hub did not accept your token", fix=_LOGIN) from e
        if status == 403:
            raise PushError(f"no write access to {repo_id}", fix="push under your user name or an organisation you can write to") from e
        if isinstance(e, RepositoryNotFoundError):
            raise PushError(f"{repo_id} was not found or is not yours", fix=_LOGIN) from e
        reason = e.server_message or (str(e).strip().splitlines() or [""])[0]
        raise PushError(f"the Hub refused the upload ({status}): {reason}".rstrip(": ")) from e
    except (OSError, ValueError) as e:  # unreadable output files, invalid repo id or card metadata
        raise PushError(describe_error(e)) from e
    return str(url)


def method_catalog() -> dict[str, Any]:
    """Every merge method's spec by name (imports torch: call from a worker)."""
    from mergetui.engine.methods.registry import get_method, method_names

    return {n: get_method(n) for n in method_names()}


def describe_error(e: BaseException) -> str:
    """A one-paragraph message for any error, with the fix when the engine gave one."""
    from mergetui.engine.errors import MergeError

    if isinstance(e, MergeError):
        return e.message + (f" — fix: {e.fix}" if e.fix else "")
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
