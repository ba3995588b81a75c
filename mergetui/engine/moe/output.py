"""Files written next to the MoE's weights: index, config, tokenizer (the base's), card, recipe."""

from __future__ import annotations

import json
from pathlib import Path

from mergetui.engine.moe.plan import MoEPlan
from mergetui.engine.output import mergetui_version, copy_side_files

CONFIG_NAME = "mergetui_moe_config.yml"


def write_moe_metadata(plan: MoEPlan, out: Path, config_text: str | None = None) -> None:
    """Write the shard index, config.json, generation config, tokenizer files, card and recipe into `out`."""
    index = {"metadata": {"total_size": plan.total_bytes, "mergetui_version": mergetui_version()},
             "weight_map": {t.name: t.shard for t in plan.tensors}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(plan.out_config, indent=2) + "\n")
    base_root = plan.sources[plan.config.base_model].fetch(set())
    copy_side_files(base_root, base_root, out)
    recipe = config_text if config_text is not None else plan.config.to_yaml()
    (out / CONFIG_NAME).write_text(recipe)
    (out / "README.md").write_text(moe_card(plan, recipe))


def moe_card(plan: MoEPlan, recipe: str) -> str:
    """A README.md with front matter (base_model list, tags), the experts and the recipe."""
    cfg = plan.config
    models = list(plan.sources)
    hub = [m for m in models if not m.startswith((".", "/", "~"))]
    lines = ["---", "base_model:"] + [f"- {m}" for m in (hub or models)]
    lines += ["library_name: transformers", "tags:", "- moe", "- merge", "- mergetui", "---", ""]
    lines += ["# Mixture of experts", "",
              f"A {plan.family.name} model assembled with mergetui from {len(cfg.experts)} experts "
              f"({cfg.experts_per_token} per token, gate_mode {cfg.gate_mode}) over the base model {cfg.base_model}.", "",
              "## Experts", ""]
    for i, e in enumerate(cfg.experts):
        lines.append(f"{i}. {e.source_model}")
    for e in cfg.shared_experts or []:
        lines.append(f"- shared: {e.source_model}")
    lines += ["", "## Configuration", "", "```yaml", recipe.rstrip(), "```", ""]
    return "\n".join(lines)
