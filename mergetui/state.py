"""The workbench's state: the bench, the recipe being edited, the layout and the active job.

One instance lives on the App; views read it when they are shown and write it through these
methods, so no view needs to know about another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergetui.backend import Profile
from mergetui.engine.config import MergeConfig
from mergetui.engine.errors import ConfigError
from mergetui.engine.moe.config import MoEConfig
from mergetui.jobs import Job
from mergetui.layout_model import LayoutModel
from mergetui.moe_recipe import Recipe, moe_for_bench, parse_recipe
from mergetui.recipe import config_for_bench, set_field, sync_models


@dataclass
class WorkbenchState:
    """Everything the views share."""

    bench: list[str] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    config: MergeConfig | None = None
    moe: MoEConfig | None = None  # the MoE recipe (mergekit-moe), kept while the merge recipe is shown
    kind: str = "merge"  # which recipe Recipe edits and Run runs: "merge" or "moe"
    config_path: str = "merge.yml"
    out_dir: str = "merged"
    local_dirs: list[str] = field(default_factory=list)
    layout: LayoutModel = field(default_factory=LayoutModel)
    methods: dict[str, Any] = field(default_factory=dict)  # name -> MethodSpec, once loaded
    job: Job | None = None  # the merge the Run view shows
    job_running: bool = False
    job_progress: tuple[int, int] = (0, 0)  # bytes done, bytes total of that merge

    def add_to_bench(self, ref: str) -> bool:
        """Put a model on the bench; False if it was already there."""
        if ref in self.bench:
            return False
        self.bench.append(ref)
        self._bench_changed()
        return True

    def remove_from_bench(self, ref: str) -> None:
        """Take a model off the bench."""
        if ref in self.bench:
            self.bench.remove(ref)
            self.profiles.pop(ref, None)
            self._bench_changed()

    def _bench_changed(self) -> None:
        if self.config is not None and self.config.models:
            self.config = sync_models(self.config, self.bench)
        self.sync_layout_sources()

    def set_profile(self, profile: Profile) -> None:
        """Record a loaded profile (feeds the layout's layer counts)."""
        self.profiles[profile.ref] = profile
        self.sync_layout_sources()

    def sync_layout_sources(self) -> None:
        """The layout's source strips: bench models (and slice models) with known layer counts."""
        refs = list(self.bench)
        for b in self.layout.blocks:
            refs += [s.model for s in b.spans if s.model not in refs]
        self.layout.sources = {r: self.profiles[r].layers for r in refs if r in self.profiles and self.profiles[r].layers}

    def recipe(self) -> MergeConfig:
        """The recipe, created from the bench on first use."""
        if self.config is None:
            self.config = config_for_bench(self.bench)
        return self.config

    def moe_recipe(self) -> MoEConfig:
        """The MoE recipe, created from the bench (and the merge recipe's base) on first use."""
        if self.moe is None:
            base = self.config.base_model if self.config is not None else None
            self.moe = moe_for_bench(self.bench, base if base in self.bench else None)
        return self.moe

    def active(self) -> Recipe:
        """The recipe Recipe shows and Run runs: the merge, or the MoE when kind is "moe"."""
        return self.moe_recipe() if self.kind == "moe" else self.recipe()

    def method(self) -> str:
        """The chosen merge method ('linear' until a recipe exists; 'moe' for a MoE)."""
        if self.kind == "moe":
            return "moe"
        return self.config.merge_method if self.config else "linear"

    def set_method(self, name: str) -> None:
        """Choose a merge method, or "moe" for a Mixture of Experts (the other recipe is kept)."""
        if name == "moe":
            self.kind = "moe"
            self.moe_recipe()
            return
        self.config = set_field(self.recipe(), "merge_method", name)
        self.kind = "merge"

    def set_recipe(self, cfg: Recipe) -> None:
        """Make `cfg` the active recipe (its kind follows its type)."""
        if isinstance(cfg, MoEConfig):
            self.moe, self.kind = cfg, "moe"
        else:
            self.config, self.kind = cfg, "merge"

    def open_config(self, path: str) -> None:
        """Load a YAML recipe (merge or MoE); its models join the bench. Missing file: remember the path only."""
        self.config_path = path
        p = Path(path)
        if not p.exists():
            return
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
        cfg = parse_recipe(text, str(p))
        self.set_recipe(cfg)
        for ref in cfg.referenced_models():
            if ref not in self.bench:
                self.bench.append(ref)
        if isinstance(cfg, MergeConfig) and cfg.slices:
            self.layout.load_slices(cfg.slices)
        self.sync_layout_sources()

    def save_config(self, path: str | None = None) -> Path:
        """Write the active recipe as mergekit (or mergekit-moe) YAML."""
        p = Path(path or self.config_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.active().to_yaml())
        self.config_path = str(p)
        return p
