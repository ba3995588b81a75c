"""Compare mergetui's vocabulary alignment and chat templates with mergekit 0.1.5, end to end.

A dev tool: mergekit is never a dependency of mergetui. With mergekit in a throwaway venv
(see compare_mergekit_methods.py for how to make /tmp/mkvenv), run from the repo root:

    .venv/bin/python benchmarks/compare_mergekit_vocab.py [/tmp/mkvenv/bin/mergekit-yaml] \
        > benchmarks/compare_mergekit_vocab.txt

Tiny llama models (hidden 64, vocab 128) where fine-tunes add special tokens (<extra_i>, the
32003-vs-32001 case) are merged by both tools with each tokenizer setting; the outputs are
compared tensor by tensor, config by config, and tokenizer by tokenizer (vocabulary, added
tokens, an encoding, a rendered chat template).

Known difference: mergekit's llama3.jinja has line breaks after `{{ ... }}` tags, so its
render puts a newline after every <|eot_id|>; mergetui's llama3 follows Meta's format (none).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mergetui.cli import main  # noqa: E402
from tiny_models import make_model  # noqa: E402

MERGEKIT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mkvenv/bin/mergekit-yaml"


def load_dir(d: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model directory."""
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def compare(ours: Path, theirs: Path) -> list[str]:
    """Differences between two merged model directories, as lines."""
    from transformers import AutoTokenizer

    lines = []
    sa, sb = load_dir(ours), load_dir(theirs)
    if set(sa) != set(sb):
        lines.append(f"tensor names differ: only mergetui {sorted(set(sa) - set(sb))}, only mergekit {sorted(set(sb) - set(sa))}")
    worst, where = 0.0, ""
    for k in sorted(set(sa) & set(sb)):
        if sa[k].shape != sb[k].shape:
            lines.append(f"{k}: shape {list(sa[k].shape)} vs {list(sb[k].shape)}")
            continue
        d = (sa[k].float() - sb[k].float()).abs().max().item()
        if d > worst:
            worst, where = d, k
    lines.append(f"max |diff| over tensors: {worst:.3g}" + (f" ({where})" if where else ""))
    ca, cb = json.loads((ours / "config.json").read_text()), json.loads((theirs / "config.json").read_text())
    diff = {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}
    lines.append(f"config.json: vocab_size {ca.get('vocab_size')} vs {cb.get('vocab_size')}" + (f"; other differences {diff}" if diff else ", nothing else differs"))
    ta, tb = AutoTokenizer.from_pretrained(ours), AutoTokenizer.from_pretrained(theirs)
    va, vb = ta.get_vocab(), tb.get_vocab()
    lines.append(f"tokenizer: len {len(ta)} vs {len(tb)}, same vocabulary {va == vb}, "
                 f"same added tokens {[str(t) for t in ta.added_tokens_decoder.values()] == [str(t) for t in tb.added_tokens_decoder.values()]}")
    text = "w1 w2 <extra_0> w3 <extra_1> <new> <extra_2>"
    lines.append(f"encode {text!r}: {ta(text).input_ids} vs {tb(text).input_ids}")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    try:
        ra, rb = ta.apply_chat_template(msgs, tokenize=False), tb.apply_chat_template(msgs, tokenize=False)
        lines.append(f"chat template renders the same: {ra == rb}")
    except ValueError:  # transformers: no chat template set
        lines.append("chat template: neither output defines one")
    return lines


def main_() -> None:
    d = Path(tempfile.mkdtemp(prefix="mt-vocab-"))
    a = make_model(d / "a", "llama", layers=2, seed=1)
    b = make_model(d / "b", "llama", layers=2, seed=2, base=a, extra_tokens=2)
    c = make_model(d / "c", "llama", layers=2, seed=3, base=a, extra_tokens=3)
    bt = make_model(d / "bt", "llama", layers=2, seed=4, base=a, extra_tokens=2, tie=True)
    a2 = make_model(d / "a2", "llama", layers=2, seed=5, base=a)
    # b brings a chat template of its own, for chat_template: auto
    (b / "chat_template.jinja").write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}")
    lin = f"merge_method: linear\nbase_model: {a}\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n  - model: {b}\n    parameters: {{weight: 0.5}}\n"
    ties = (f"merge_method: ties\nbase_model: {a}\nparameters: {{normalize: true}}\nmodels:\n  - model: {a}\n"
            f"  - model: {b}\n    parameters: {{weight: 0.6, density: 0.5}}\n  - model: {c}\n    parameters: {{weight: 0.4, density: 0.7}}\n")
    tokens = (
        "tokenizer:\n  source: union\n  tokens:\n"
        "    <extra_0>: {source: {kind: zero}}\n"
        f"    <extra_1>: {{source: {{kind: model_token, model: {a}, token: <s>}}}}\n"
        f"    w7: {{source: {b}, force: true}}\n"
        f"    w9: {{source: {{kind: model_token, model: {b}, token_id: 5}}, force: true}}\n"
        f"    <new>: {{source: {{kind: model_token, model: {a}, token: w3}}}}\n"
    )
    cases = {
        "union, linear (32003-vs-32001 style)": lin + "tokenizer_source: union\n",
        "base, linear": lin + "tokenizer_source: base\n",
        "a fine-tune's tokenizer, linear": lin + f"tokenizer_source: {b}\n",
        "union, ties over three models": ties + "tokenizer_source: union\n",
        "base, ties over three models": ties + "tokenizer_source: base\n",
        "union + pad_to_multiple_of 64": lin + "tokenizer:\n  source: union\n  pad_to_multiple_of: 64\n",
        "union + token overrides": lin + tokens,
        "union, tied fine-tune into untied base": lin.replace(str(b), str(bt)) + "tokenizer_source: union\n",
        "union + chat_template chatml": lin + "tokenizer_source: union\nchat_template: chatml\n",
        "union + chat_template auto (only b has one)": lin + "tokenizer_source: union\nchat_template: auto\n",
        "no tokenizer setting, chat_template llama3": f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n  - model: {a2}\n    parameters: {{weight: 0.5}}\nchat_template: llama3\n",
    }
    for i, (title, text) in enumerate(cases.items()):
        cfg = d / f"cfg{i}.yml"
        cfg.write_text(text)
        ours, theirs = d / f"mt{i}", d / f"mk{i}"
        rc = main(["merge", str(cfg), str(ours), "--quiet", "--allow-crimes"])
        p = subprocess.run([MERGEKIT, str(cfg), str(theirs), "--allow-crimes", "--quiet"], capture_output=True, text=True)
        print(f"## {title}")
        if rc != 0 or p.returncode != 0:
            print(f"mergetui exit {rc}, mergekit exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] }")
            continue
        for line in compare(ours, theirs):
            print("  " + line)
        print(flush=True)


if __name__ == "__main__":
    main_()
