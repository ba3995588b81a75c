"""Everything written next to the merged weights: index, config, tokenizer, model card, recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergetui.engine.sources import TOKENIZER_FILES

if TYPE_CHECKING:
    from mergetui.engine.plan import Plan
    from mergetui.engine.tensor_io import ShardLayout


def write_metadata_files(plan: "Plan", out: Path, layouts: dict[str, "ShardLayout"]) -> None:
    """Write the shard index, config, generation config, tokenizer, card and recipe into `out`."""
    weight_map = {t.name: t.shard for t in plan.tensors}
    index = {"metadata": {"total_size": plan.total_bytes, "mergetui_version": mergetui_version()}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(plan.out_config, indent=2) + "\n")

    copy_side_files(plan.sources[plan.template_model].fetch(set()), plan.sources[plan.tokenizer_model].fetch(set()), out)
    if plan.vocab is not None and plan.vocab.changed:
        from mergetui.engine.vocab import write_tokenizer

        write_tokenizer(plan.vocab, out)  # the built vocabulary replaces the copied tokenizer files
    _apply_chat_template(_chat_template_text(plan), out)

    (out / "mergetui_config.yml").write_text(plan.config.to_yaml())
    (out / "README.md").write_text(model_card(plan))


def copy_side_files(template_root: Path, tokenizer_root: Path, out: Path) -> None:
    """Copy generation_config.json from the template model and the tokenizer files from `tokenizer_root`."""
    gen = template_root / "generation_config.json"
    if gen.exists():
        shutil.copyfile(gen, out / "generation_config.json")
    for name in TOKENIZER_FILES:
        if (tokenizer_root / name).exists():
            shutil.copyfile(tokenizer_root / name, out / name)


def check_chat_template(template: str | None) -> None:
    """Reject chat_template values this version cannot honour, before any work starts."""
    from mergetui.engine.chat_templates import check_chat_template as check

    check(template)


def _chat_template_text(plan: "Plan") -> str | None:
    """The Jinja text the config's chat_template stands for (None: keep the tokenizer's)."""
    from mergetui.engine.chat_templates import resolve_chat_template

    template = plan.config.chat_template
    roots = [plan.sources[r].fetch(set()) for r in plan.config.referenced_models()] if template == "auto" else []
    return resolve_chat_template(template, roots)


def _apply_chat_template(template: str | None, out: Path) -> None:
    """Set a Jinja chat template in tokenizer_config.json (None keeps the copied one)."""
    if not template:
        return
    cfg_path = out / "tokenizer_config.json"
    cfg: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)  # would override the config's


def model_card(plan: "Plan") -> str:
    """A README.md with front matter (base_model list, tags) and the recipe."""
    models = list(plan.sources)
    hub_models = [m for m in models if not m.startswith((".", "/", "~"))]
    lines = ["---", "base_model:"]
    lines += [f"- {m}" for m in (hub_models or models)]
    lines += ["library_name: transformers", "tags:", "- merge", "- mergetui", "---", ""]
    title = plan.config.name or "merged model"
    lines += [f"# {title}", "", f"This model was merged with mergetui using the **{plan.method.name}** method.", ""]
    lines += ["## Models merged", ""] + [f"* {m}" + (" (base)" if m == plan.config.base_model else "") for m in models]
    lines += ["", f"Output: {plan.out_layers} layers, {plan.total_params:,} parameters.", "", "## Configuration", "", "```yaml", plan.config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def mergetui_version() -> str:
    from mergetui import __version__

    return __version__
