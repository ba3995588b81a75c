"""What a model's tokenizer files say, read as JSON (no tokenizers / transformers import).

The length is what `len(tokenizer)` gives in transformers: every id of the base vocabulary
plus added tokens that are not in it. tokenizer.json is preferred; vocab.json (BPE) or a
sentencepiece tokenizer.model (pieces counted from the protobuf) are the fallbacks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class TokenizerFacts:
    """A tokenizer's length, added tokens, special tokens and chat template."""

    length: int | None = None
    vocab_length: int | None = None  # the base vocabulary, added tokens excluded
    added: list[tuple[int, str, bool]] = field(default_factory=list)  # (id, content, special), by id
    special: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenizerFacts":
        """Inverse of to_dict."""
        return cls(
            length=d.get("length"),
            vocab_length=d.get("vocab_length"),
            added=[(int(i), str(c), bool(s)) for i, c, s in d.get("added", [])],
            special=dict(d.get("special", {})),
            chat_template=d.get("chat_template"),
        )


def read_tokenizer(files: dict[str, Path]) -> TokenizerFacts | None:
    """Summarize the tokenizer files present (name -> local path); None if there are none."""
    if not any(n in files for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        return None
    facts = TokenizerFacts()
    ids: set[int] = set()
    added: dict[int, tuple[str, bool]] = {}
    tj = _load_json(files.get("tokenizer.json"))
    if isinstance(tj, dict):
        vocab = (tj.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            ids.update(int(v) for v in vocab.values() if isinstance(v, int))
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            ids.update(range(len(vocab)))
        facts.vocab_length = len(ids) if ids else None
        for t in tj.get("added_tokens") or []:
            if isinstance(t, dict) and isinstance(t.get("id"), int):
                added[t["id"]] = (str(t.get("content", "")), bool(t.get("special", False)))
    elif "vocab.json" in files:
        vocab = _load_json(files["vocab.json"])
        if isinstance(vocab, dict):
            ids.update(int(v) for v in vocab.values() if isinstance(v, int))
            facts.vocab_length = len(ids)
    elif "tokenizer.model" in files:
        n = count_sentencepiece_pieces(files["tokenizer.model"])
        if n:
            ids.update(range(n))
            facts.vocab_length = n
    extra = _load_json(files.get("added_tokens.json"))
    if isinstance(extra, dict):
        for content, i in extra.items():
            if isinstance(i, int):
                added.setdefault(i, (content, False))
    tc = _load_json(files.get("tokenizer_config.json"))
    if isinstance(tc, dict):
        for i, t in (tc.get("added_tokens_decoder") or {}).items():
            if str(i).isdigit() and isinstance(t, dict):
                added.setdefault(int(i), (str(t.get("content", "")), bool(t.get("special", False))))
        facts.special.update(_special_tokens(tc))
        facts.chat_template = _chat_template(tc.get("chat_template"))
    stm = _load_json(files.get("special_tokens_map.json"))
    if isinstance(stm, dict):
        for k, v in _special_tokens(stm).items():
            facts.special.setdefault(k, v)
    if facts.chat_template is None:
        facts.chat_template = _template_file(files)
    # Only tokens beyond the base vocabulary are "added" for merging purposes: a special token
    # that re-labels an existing id (e.g. <s>) has an embedding row already.
    facts.added = sorted((i, c, s) for i, (c, s) in added.items() if i not in ids)
    all_ids = ids | set(added)
    facts.length = len(all_ids) if all_ids else None
    return facts


def _special_tokens(d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k in SPECIAL_KEYS:
        v = d.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            out[k] = v
    return out


def _chat_template(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        tpl = named.get("default") or next((t for t in named.values() if isinstance(t, str)), None)
        return tpl if isinstance(tpl, str) else None
    return None


def _template_file(files: dict[str, Path]) -> str | None:
    p = files.get("chat_template.jinja")
    if p is not None:
        try:
            return p.read_text()
        except OSError:
            return None
    d = _load_json(files.get("chat_template.json"))
    return _chat_template(d.get("chat_template")) if isinstance(d, dict) else None


def _load_json(p: Path | None) -> Any:
    if p is None:
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def count_sentencepiece_pieces(path: Path) -> int | None:
    """Number of pieces in a sentencepiece model: top-level protobuf field 1 entries."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    pos, count = 0, 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                n, pos = _varint(data, pos)
                pos += n
                if field_no == 1:
                    count += 1
            elif wire == 5:
                pos += 4
            else:
                return None
    except IndexError:
        return None
    return count or None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
