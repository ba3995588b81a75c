"""The workbench's state: the bench, the recipe being edited, the layout and the active job.

One instance lives on the App; views read it when they are shown and write it through these
methods, so no view needs to know about another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergetui.backend import Profile
from mergetui.engine.config import MergeConfig, load_config
from mergetui.jobs import Job
from mergetui.layout_model import LayoutModel
from mergetui.recipe import config_for_bench, sync_models


@dataclass
class WorkbenchState:
    """Everything the views share."""

    bench: list[str] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    config: MergeConfig | None = None
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

    def method(self) -> str:
        """The chosen merge method ('linear' until a recipe exists)."""
        return self.config.merge_method if self.config else "linear"

    def open_config(self, path: str) -> None:
        """Load a YAML recipe; its models join the bench. Missing file: remember the path only."""
        self.config_path = path
        if not Path(path).exists():
            return
        self.config = load_config(path)
        for ref in self.config.referenced_models():
            if ref not in self.bench:
                self.bench.append(ref)
        if self.config.slices:
            self.layout.load_slices(self.config.slices)
        self.sync_layout_sources()

    def save_config(self, path: str | None = None) -> Path:
        """Write the recipe as mergekit YAML."""
        p = Path(path or self.config_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.recipe().to_yaml())
        self.config_path = str(p)
        return p
