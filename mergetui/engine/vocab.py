"""Vocabulary alignment: the output tokenizer, and every input's token rows moved into it.

mergekit's semantics (`tokenizer:` / `tokenizer_source:`): the output vocabulary is the
base's ('base'), one model's (a model reference), or the union ('union': the base's, then the
regular tokens other models have and it lacks, then their added tokens). The base's added
tokens that have no embedding row are dropped first. Each input's vocab tensors (embedding,
lm_head; a tied model's head is its embedding) are permuted into that vocabulary. A row a
model lacks is filled: from the only model that has the token, else from the base, else the
mean of the models that have it (zeros when none has it), unless `tokenizer.tokens` says
otherwise; `force` gives the override row to every model. Rows past the vocabulary
(`pad_to_multiple_of`) get each model's mean row.

Everything per token is an index op on integer maps built once at plan time (output id ->
model row, or -1). Building the maps for a 150k-token union takes well under a second
(see tests/test_vocab.py); `tokenizers` (and `transformers`, for slow-only tokenizers) are
imported only when a config asks for alignment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mergetui.engine.config import MergeConfig, ModelTokenSource, ZeroSource
from mergetui.engine.errors import ConfigError, MergeError, ModelError

log = logging.getLogger(__name__)

# Files that describe a vocabulary without our additions: dropped when the tokenizer changes
# (tokenizer.json then carries everything, as transformers' save_pretrained(legacy_format=False)).
SLOW_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


@dataclass
class ModelVocab:
    """One model's tokenizer vocabulary and the number of rows its vocab tensors have."""

    ref: str
    vocab: dict[str, int]  # every token -> id, as its tokenizer says (ids past `rows` included)
    rows: int
    added: dict[int, Any] = field(default_factory=dict)  # id -> tokenizers.AddedToken
    own: bool = True  # False: the model ships no tokenizer; the base's is assumed (as mergekit)


@dataclass(frozen=True)
class TokenOverride:
    """A `tokenizer.tokens` entry, resolved: where the token's fill row comes from."""

    token: str
    out_id: int
    kind: str  # "default" (the fill rule) | "row" (a model's row) | "zero"
    model: str | None = None
    row: int = -1
    force: bool = False


@dataclass
class AlignSpec:
    """How the inputs of one vocab tensor map into the output vocabulary (index tensors only)."""

    size: int  # output rows, padding included
    maps: torch.Tensor  # [k, n] int64: input j's row for output id, -1 when it lacks the token
    rows: list[int]  # rows each input has for its tokens
    fill_ids: torch.Tensor  # [f] sorted output ids that at least one input takes from a fill row
    need: torch.Tensor  # [k, f] bool: input j takes fill row i (it lacks the token, or forced)
    fill_src: torch.Tensor  # [f] input whose row is the fill row; -1: mean or zeros
    fill_row: torch.Tensor  # [f] the row in that input
    fill_mean: torch.Tensor  # [f] bool: the fill row is the mean of the inputs having the token

    @property
    def n_tokens(self) -> int:
        """Output ids the tokenizer uses (rows before padding)."""
        return int(self.maps.shape[1])


@dataclass
class VocabPlan:
    """The output vocabulary of a merge and every model's row map into it."""

    source: str  # union | base | a model reference
    tokenizer_from: str  # the model whose tokenizer files the output starts from
    tokenizer: Any  # tokenizers.Tokenizer of the output
    changed: bool  # the output tokenizer differs from tokenizer_from's files (must be written)
    n_tokens: int
    size: int  # output rows: n_tokens rounded up to pad_to_multiple_of
    maps: dict[str, torch.Tensor]  # model -> int64 [n_tokens]
    rows: dict[str, int]
    overrides: list[TokenOverride] = field(default_factory=list)
    _specs: dict[tuple, AlignSpec | None] = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        """Hash of everything that decides the aligned rows (for --resume fingerprints)."""
        h = hashlib.sha256(json.dumps([self.source, self.size, [o.__dict__ for o in self.overrides]], sort_keys=True).encode())
        for ref in sorted(self.maps):
            h.update(ref.encode())
            h.update(self.maps[ref].numpy().tobytes())
        return h.hexdigest()[:16]

    def spec(self, refs: list[str], base: str | None, tensor: str) -> AlignSpec | None:
        """The alignment of one vocab tensor merged from `refs` (None: its rows stay as they are)."""
        key = (tuple(refs), base if base in refs else None)
        if key not in self._specs:
            self._specs[key] = _make_spec(self, refs, key[1], tensor)
        return self._specs[key]


def _make_spec(vp: VocabPlan, refs: list[str], base: str | None, tensor: str) -> AlignSpec | None:
    maps = torch.stack([vp.maps[r] for r in refs])
    k, n = maps.shape
    has = maps >= 0
    force = torch.zeros(n, dtype=torch.bool)
    for o in vp.overrides:
        force[o.out_id] = o.force
    need_all = ~has | force
    fill_ids = need_all.any(0).nonzero().squeeze(1)
    rows = [vp.rows[r] for r in refs]
    arange = torch.arange(n)
    if fill_ids.numel() == 0 and vp.size == n and all(r == n and torch.equal(m, arange) for r, m in zip(rows, maps)):
        return None  # same vocabulary, same rows: nothing moves

    sub = maps[:, fill_ids]
    sub_has = sub >= 0
    count = sub_has.sum(0)
    # mergekit's default rule: the only model having it; none: zeros; the base's; else the mean
    src = torch.full((fill_ids.numel(),), -1, dtype=torch.long)
    one = count == 1
    src[one] = sub_has.int().argmax(0)[one]
    if base is not None:
        b = refs.index(base)
        src[(count > 1) & sub_has[b]] = b
    mean = (count > 1) & (src < 0)
    row = torch.where(src >= 0, sub.gather(0, src.clamp(min=0)[None]).squeeze(0), -1)

    # the configured tokens (a loop over the few overrides, never over the vocabulary)
    for o in vp.overrides:
        if o.kind == "default":
            continue
        i = int(torch.searchsorted(fill_ids, o.out_id))
        if i >= fill_ids.numel() or int(fill_ids[i]) != o.out_id:
            continue  # every input has the token and it is not forced: each keeps its own row
        mean[i] = False
        if o.kind == "zero":
            src[i], row[i] = -1, -1
            continue
        if o.model not in refs:
            raise ConfigError(
                f"tokenizer.tokens[{o.token!r}]: its row comes from {o.model}, which is not an input of {tensor}",
                fix=f"take the row from one of {', '.join(refs)}",
            )
        src[i], row[i] = refs.index(o.model), o.row

    absent = ((count == 0) & (src < 0)).nonzero().squeeze(1)
    if absent.numel():
        log.warning("%s: %d token(s) are in none of %s and get zero rows", tensor, absent.numel(), ", ".join(refs))
    need = need_all[:, fill_ids]
    return AlignSpec(vp.size, maps, rows, fill_ids, need, src, row, mean)


def align(tensors: list[torch.Tensor], spec: AlignSpec) -> list[torch.Tensor]:
    """The inputs' rows permuted, filled and padded into the output vocabulary.

    Consumes `tensors` (each slot is released once its aligned copy exists), so at most the
    inputs plus one aligned copy of each are alive; everything per token is an index op.
    """
    k = len(tensors)
    if k != spec.maps.shape[0]:
        raise RuntimeError(f"align: {k} tensors for a spec of {spec.maps.shape[0]} inputs")
    rest = tuple(tensors[0].shape[1:])
    for j, x in enumerate(tensors):
        if x.shape[0] < spec.rows[j] or tuple(x.shape[1:]) != rest:
            raise MergeError(
                f"vocabulary alignment: input {j} has shape {list(x.shape)}, expected {spec.rows[j]} rows of {list(rest)}",
                fix="the model's vocab tensors disagree with its other vocab tensors; run `mergetui check`",
            )
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    n, f = spec.n_tokens, spec.fill_ids.numel()

    # the fill rows: one model's row copied in the tensors' dtype; means accumulated in `acc`
    fill = torch.empty((f, *rest), dtype=dtype)
    if f:
        fill[(spec.fill_src < 0) & ~spec.fill_mean] = 0
        for j, x in enumerate(tensors):
            take = (spec.fill_src == j).nonzero().squeeze(1)
            if take.numel():
                fill.index_copy_(0, take, x.index_select(0, spec.fill_row[take]).to(dtype))
        m = spec.fill_mean.nonzero().squeeze(1)
        if m.numel():
            total = torch.zeros((m.numel(), *rest), dtype=acc)
            counts = torch.zeros(m.numel(), dtype=acc)
            for j, x in enumerate(tensors):
                rows = spec.maps[j, spec.fill_ids[m]]
                has = (rows >= 0).nonzero().squeeze(1)
                total.index_add_(0, has, x.index_select(0, rows[has]).to(acc))
                counts[has] += 1
            fill.index_copy_(0, m, (total / counts.view(-1, *([1] * len(rest)))).to(dtype))
            del total

    out: list[torch.Tensor] = []
    for j in range(k):
        x = tensors[j]
        tensors[j] = x.new_empty(0)  # drop the caller's reference: the input can be freed now
        y = torch.empty((spec.size, *rest), dtype=dtype)
        idx = spec.maps[j].clamp(min=0)
        if x.dtype == dtype:
            torch.index_select(x, 0, idx, out=y[:n])
        else:
            y[:n] = x.index_select(0, idx).to(dtype)
        del x
        sel = spec.need[j].nonzero().squeeze(1)
        if f and sel.numel() == f:
            y.index_copy_(0, spec.fill_ids, fill)
        elif sel.numel():
            y.index_copy_(0, spec.fill_ids[sel], fill.index_select(0, sel))
        if spec.size > n:
            # new rows as the mean of the real ones (https://nlp.stanford.edu/~johnhew/vocab-expansion.html)
            y[n:] = y[:n].mean(0, dtype=acc).to(dtype)
        out.append(y)
    return out


# -- building the output vocabulary -------------------------------------------------------------


def load_tokenizer(root: Path) -> Any | None:
    """A model's tokenizer as a `tokenizers.Tokenizer`, or None when it ships none."""
    from tokenizers import Tokenizer

    tj = root / "tokenizer.json"
    if tj.is_file():
        try:
            return Tokenizer.from_file(str(tj))
        except Exception as e:
            raise ModelError(f"{tj}: cannot read the tokenizer ({e})", fix="re-download the model's tokenizer files") from None
    if not any((root / f).is_file() for f in ("tokenizer.model", "vocab.json")):
        return None
    try:  # a slow-only tokenizer: transformers converts it to the fast form
        from transformers import AutoTokenizer

        backend = getattr(AutoTokenizer.from_pretrained(str(root), use_fast=True), "backend_tokenizer", None)
    except Exception as e:
        raise ModelError(f"{root}: cannot load the tokenizer ({type(e).__name__}: {e})", fix="add a tokenizer.json to the model") from None
    if backend is None:
        raise ModelError(f"{root}: the tokenizer has no fast (tokenizer.json) form", fix="add a tokenizer.json to the model")
    return Tokenizer.from_str(backend.to_str())


def model_vocab(ref: str, tok: Any, rows: int) -> ModelVocab:
    """The vocabulary of `tok` as model `ref` (with `rows` embedding rows) uses it."""
    return ModelVocab(ref, tok.get_vocab(with_added_tokens=True), rows, dict(tok.get_added_tokens_decoder()))


def union_additions(base: ModelVocab, others: list[ModelVocab]) -> tuple[list[str], list[Any]]:
    """What the union adds to the base's vocabulary: the others' regular tokens, then their added tokens.

    Only tokens with an embedding row in their model count; regular tokens come model by
    model in id order, added tokens with the first model's settings (special, normalized...).
    """
    added: dict[str, Any] = {}
    for mv in [base, *others]:
        for i in sorted(mv.added):
            if i < mv.rows:
                added.setdefault(mv.added[i].content, mv.added[i])
    have = base.vocab.keys()
    regular: dict[str, None] = {}
    for mv in others:
        if not mv.own:
            continue
        new = sorted(mv.vocab.keys() - have - added.keys(), key=mv.vocab.__getitem__)
        regular.update(dict.fromkeys(new[: bisect_left(new, mv.rows, key=mv.vocab.__getitem__)]))
    extra = [at for c, at in added.items() if c not in have and c not in regular]
    return list(regular), extra


def row_maps(out_vocab: dict[str, int], n_tokens: int, vocabs: dict[str, ModelVocab]) -> dict[str, torch.Tensor]:
    """For each model: int64 [n_tokens], its row for each output id, -1 when it has none."""
    out_ids = np.fromiter(out_vocab.values(), dtype=np.int64, count=len(out_vocab))
    maps = {}
    for ref, mv in vocabs.items():
        ids = np.fromiter(map(mv.vocab.get, out_vocab.keys(), repeat(-1)), dtype=np.int64, count=len(out_vocab))
        ids[ids >= mv.rows] = -1  # a token whose id has no row (padding, stray added token)
        m = np.full(n_tokens, -1, dtype=np.int64)
        m[out_ids] = ids
        maps[ref] = torch.from_numpy(m)
    return maps


def padded(n: int, multiple: int | None) -> int:
    """`n` rounded up to a multiple of `multiple`."""
    return n if not multiple else -(-n // multiple) * multiple


def build_vocab(cfg: MergeConfig, base: str, roots: dict[str, Path], rows: dict[str, int]) -> VocabPlan:
    """The output tokenizer and each model's row map, as `cfg`'s tokenizer settings ask.

    `rows`: every model merged, base first, with the rows of its vocab tensors; `roots`: the
    local directory of each of them and of the tokenizer source model.
    """
    from tokenizers import AddedToken, Tokenizer

    choice = cfg.tokenizer_choice() or "base"
    tcfg = cfg.tokenizer
    base_tok = load_tokenizer(roots[base])
    if base_tok is None:
        raise ModelError(
            f"model {base}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)",
            fix="vocabulary alignment starts from the base model's tokenizer; set base_model to a model that has one",
        )
    vocabs: dict[str, ModelVocab] = {}
    for ref, n in rows.items():
        tok = base_tok if ref == base else load_tokenizer(roots[ref])
        if tok is None:  # rows come in config order, so the base's vocabulary is known by now
            log.warning("model %s: no tokenizer files; assuming the base's (%s)", ref, base)
            vocabs[ref] = ModelVocab(ref, vocabs[base].vocab, n, vocabs[base].added, own=False)
        else:
            vocabs[ref] = model_vocab(ref, tok, n)

    if choice in ("base", "union"):
        out_tok, changed = _stripped(base_tok, rows[base])
        tokenizer_from = base
        if choice == "union":
            regular, extra = union_additions(vocabs[base], [v for r, v in vocabs.items() if r != base])
            if regular:
                out_tok.add_tokens([AddedToken(t, normalized=True, special=False) for t in regular])
            if extra:
                out_tok.add_tokens(extra)
            changed = changed or bool(regular or extra)
    else:
        found = load_tokenizer(roots[choice])
        if found is None:
            raise ModelError(f"model {choice}: no tokenizer files, but it is the tokenizer source", fix="choose 'base', 'union' or a model that ships a tokenizer")
        out_tok, changed, tokenizer_from = Tokenizer.from_str(found.to_str()), not (roots[choice] / "tokenizer.json").is_file(), choice

    tokens = (tcfg.tokens if tcfg else None) or {}
    new = [t for t in tokens if out_tok.token_to_id(t) is None]
    if new:  # a configured token the vocabulary lacks is added to it (as mergekit)
        out_tok.add_tokens([AddedToken(t, normalized=True, special=False) for t in new])
        changed = True
    out_vocab = out_tok.get_vocab(with_added_tokens=True)
    n_tokens = max(out_vocab.values()) + 1
    maps = row_maps(out_vocab, n_tokens, vocabs)
    overrides = [_override(tok, ts, out_vocab[tok], vocabs, maps) for tok, ts in tokens.items()]
    size = padded(n_tokens, tcfg.pad_to_multiple_of if tcfg else None)
    return VocabPlan(choice, tokenizer_from, out_tok, changed, n_tokens, size, maps, dict(rows), overrides)


def _stripped(tok: Any, rows: int) -> tuple[Any, bool]:
    """A copy of `tok` without the added tokens whose ids have no embedding row (as mergekit)."""
    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    added = data.get("added_tokens") or []
    keep = [a for a in added if a["id"] < rows]
    if len(keep) == len(added):
        return Tokenizer.from_str(tok.to_str()), False
    data["added_tokens"] = keep
    return Tokenizer.from_str(json.dumps(data)), True


def _override(token: str, ts: Any, out_id: int, vocabs: dict[str, ModelVocab], maps: dict[str, torch.Tensor]) -> TokenOverride:
    where = f"tokenizer.tokens[{token!r}]"
    force = bool(ts.force)
    src = ts.source
    if src is None:
        return TokenOverride(token, out_id, "default", force=force)
    if isinstance(src, ZeroSource):
        return TokenOverride(token, out_id, "zero", force=force)
    model = src.model if isinstance(src, ModelTokenSource) else src
    if model not in vocabs:
        raise ConfigError(f"{where}: model {model} is not one of the merged models", fix=f"use one of {', '.join(vocabs)}")
    mv = vocabs[model]
    if isinstance(src, ModelTokenSource):
        if src.token is not None:
            row = mv.vocab.get(src.token)
            if row is None:
                raise ConfigError(f"{where}: model {model} has no token {src.token!r}", fix="check the token's spelling in that model's tokenizer.json")
        else:
            row = int(src.token_id)  # type: ignore[arg-type]
        if not 0 <= row < mv.rows:
            raise ConfigError(f"{where}: row {row} is outside {model}'s {mv.rows} embedding rows", fix=f"use a token id below {mv.rows}")
        return TokenOverride(token, out_id, "row", model, row, force)
    row = int(maps[model][out_id])
    if row < 0:
        raise ConfigError(
            f"{where}: model {model} has no token {token!r}",
            fix=f"take it from a model that has it, or give a row of another token: {{kind: model_token, model: {model}, token: ...}}",
        )
    return TokenOverride(token, out_id, "row", model, row, force)


def write_tokenizer(vocab: VocabPlan, out: Path) -> None:
    """Replace the tokenizer files copied into `out` by the built tokenizer (tokenizer.json + config)."""
    for name in SLOW_FILES:
        (out / name).unlink(missing_ok=True)
    vocab.tokenizer.save(str(out / "tokenizer.json"))
    cfg_path = out / "tokenizer_config.json"
    cfg: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError:
            cfg = {}
    if "tokenizer_class" not in cfg:
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    # transformers builds added tokens from this table: keep the source's entries that still
    # name the same token, then add every added token of the output
    decoder: dict[str, Any] = {}
    for k, v in (cfg.get("added_tokens_decoder") or {}).items():
        if str(k).isdigit() and isinstance(v, dict) and vocab.tokenizer.id_to_token(int(k)) == v.get("content"):
            decoder[str(k)] = v
    for i, at in vocab.tokenizer.get_added_tokens_decoder().items():
        decoder.setdefault(str(i), {
            "content": at.content, "lstrip": at.lstrip, "normalized": at.normalized,
            "rstrip": at.rstrip, "single_word": at.single_word, "special": at.special,
        })
    cfg["added_tokens_decoder"] = dict(sorted(decoder.items(), key=lambda kv: int(kv[0])))
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
