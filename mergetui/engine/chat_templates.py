"""Chat templates: the built-in names mergekit accepts, literal Jinja, and 'auto'.

`chat_template:` in a config is 'auto' (the template most of the input models share, the
base's on a tie), a built-in name (chatml, llama3, mistral, alpaca, exaone), or the Jinja
text itself. The built-ins below are the standard public formats, written out here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from mergetui.engine.errors import ConfigError

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# [INST] turns; an optional leading system message is put in front of the first user turn.
MISTRAL = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = none %}{%- set turns = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in turns %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('roles must alternate user/assistant after an optional system message') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system %}{{- ' [INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)

# Instruction / Input / Response sections separated by blank lines; a system text comes as is.
ALPACA = (
    "{%- for message in messages %}"
    "{%- if not loop.first %}{{- '\\n\\n' }}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- message['content'] | trim }}"
    "{%- elif message['role'] == 'user' %}{{- '### Instruction:\\n' + (message['content'] | trim) }}"
    "{%- elif message['role'] == 'user_context' %}{{- '### Input:\\n' + (message['content'] | trim) }}"
    "{%- elif message['role'] == 'assistant' %}{{- '### Response:\\n' + (message['content'] | trim) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt and (not messages or messages[-1]['role'] != 'assistant') %}"
    "{{- '\\n\\n### Response:\\n' }}"
    "{%- endif %}"
)

EXAONE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}{{- '[|system|][|endofturn|]\\n' }}{%- endif %}"
    "{{- '[|' + message['role'] + '|]' + message['content'] }}"
    "{%- if message['role'] == 'user' %}{{- '\\n' }}{%- else %}{{- '[|endofturn|]\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '[|assistant|]' }}{%- endif %}"
)

BUILTIN: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL, "alpaca": ALPACA, "exaone": EXAONE}


def check_chat_template(template: str | None) -> None:
    """Reject a chat_template that is neither 'auto', a built-in name nor Jinja text."""
    if not template or template == "auto" or template in BUILTIN:
        return
    # mergekit's rule for literal templates: some Jinja, and not just a short word
    if "{" not in template or len(template) < 20:
        raise ConfigError(
            f"chat_template {template!r}: not a built-in template name nor a Jinja template",
            fix=f"use 'auto', one of {', '.join(BUILTIN)}, or the Jinja template text itself",
        )


def model_chat_template(root: Path) -> str | None:
    """The chat template a model's tokenizer files define (chat_template.jinja wins, as in transformers)."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("tokenizer_config.json", "chat_template.json"):
        p = root / name
        if not p.is_file():
            continue
        try:
            value = json.loads(p.read_text()).get("chat_template")
        except (ValueError, AttributeError):
            continue
        found = _named_default(value)
        if found:
            return found
    return None


def _named_default(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        tpl = named.get("default")
        return tpl if isinstance(tpl, str) else None
    return None


def resolve_chat_template(template: str | None, roots: Iterable[Path]) -> str | None:
    """The Jinja text to write for `template`; None keeps the output tokenizer's own.

    'auto' picks the template most input models share (compared stripped, as mergekit does);
    on a tie the first model's (the base comes first in `roots`).
    """
    if not template:
        return None
    if template == "auto":
        found = [t.strip() for t in (model_chat_template(r) for r in roots) if t and t.strip()]
        if not found:
            return None
        counts = Counter(found)
        best = max(counts.values())
        return next(t for t in found if counts[t] == best)
    return BUILTIN.get(template, template)
