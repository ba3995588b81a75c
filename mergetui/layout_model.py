"""The frankenmerge layout editor's model: output slices over source layers, with undo/redo.

No Textual here: the Layout view renders this and maps keys onto its methods, and the tests
drive it directly. Every edit goes through `_edit`, which records an undo snapshot.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from mergetui.engine.config import InputSlice, MergeConfig, OutputSlice


@dataclass
class Span:
    """Layers [start, end) of one source model."""

    model: str
    start: int
    end: int

    @property
    def length(self) -> int:
        """Number of layers (0 or less when the span is empty)."""
        return self.end - self.start


@dataclass
class Block:
    """One output slice: one span, or several of equal length for methods that combine them."""

    spans: list[Span]

    @property
    def length(self) -> int:
        """Output layers this block contributes (its first span's length)."""
        return max(0, self.spans[0].length) if self.spans else 0

    @property
    def model(self) -> str:
        """The primary source (its colour in the output stack)."""
        return self.spans[0].model


@dataclass(frozen=True)
class Issue:
    """A validation problem of one block (index) or of the whole layout (None)."""

    block: int | None
    level: str  # error | warning
    message: str


@dataclass
class LayoutModel:
    """Source models with their layer counts, the output blocks and a selection cursor."""

    sources: dict[str, int] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    cursor: int = 0
    _undo: list[tuple[list[Block], int]] = field(default_factory=list, repr=False)
    _redo: list[tuple[list[Block], int]] = field(default_factory=list, repr=False)

    # ---- queries -------------------------------------------------------------------------
    @property
    def selected(self) -> Block | None:
        """The block under the cursor, if any."""
        return self.blocks[self.cursor] if 0 <= self.cursor < len(self.blocks) else None

    @property
    def output_layers(self) -> int:
        """Total output layers."""
        return sum(b.length for b in self.blocks)

    @property
    def can_undo(self) -> bool:
        """Whether there is an edit to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone edit to redo."""
        return bool(self._redo)

    def model_names(self) -> list[str]:
        """Source models in bench order."""
        return list(self.sources)

    def validate(self) -> list[Issue]:
        """Out-of-range, empty and unequal-length spans; unknown models; an empty layout."""
        issues: list[Issue] = []
        if not self.blocks:
            issues.append(Issue(None, "error", "no slices yet: press a to add one"))
        for i, b in enumerate(self.blocks):
            for s in b.spans:
                n = self.sources.get(s.model)
                if n is None:
                    issues.append(Issue(i, "error", f"slice {i}: {s.model} is not on the bench"))
                    continue
                if s.length <= 0:
                    issues.append(Issue(i, "error", f"slice {i}: {_short(s.model)} [{s.start}, {s.end}) is empty"))
                if s.start < 0 or s.end > n:
                    issues.append(Issue(i, "error", f"slice {i}: {_short(s.model)} [{s.start}, {s.end}) is outside its {n} layers"))
            lengths = {s.length for s in b.spans}
            if len(lengths) > 1:
                detail = ", ".join(f"{_short(s.model)} {s.length}" for s in b.spans)
                issues.append(Issue(i, "error", f"slice {i}: sources of different lengths ({detail})"))
        return issues

    def summary(self, layer_params: dict[str, int], other_params: int = 0, bytes_per_param: int = 2) -> dict[str, int]:
        """Output layers, parameters and size, from per-layer parameter counts of each model."""
        params = other_params
        for b in self.blocks:
            params += b.length * layer_params.get(b.model, 0)
        return {"layers": self.output_layers, "parameters": params, "bytes": params * bytes_per_param}

    # ---- edits ---------------------------------------------------------------------------
    def _edit(self) -> None:
        """Snapshot for undo before an edit; a new edit forgets the redo history."""
        self._undo.append((copy.deepcopy(self.blocks), self.cursor))
        del self._undo[:-200]  # bounded history
        self._redo.clear()

    def undo(self) -> bool:
        """Undo the last edit."""
        if not self._undo:
            return False
        self._redo.append((copy.deepcopy(self.blocks), self.cursor))
        self.blocks, self.cursor = self._undo.pop()
        return True

    def redo(self) -> bool:
        """Redo the last undone edit."""
        if not self._redo:
            return False
        self._undo.append((copy.deepcopy(self.blocks), self.cursor))
        self.blocks, self.cursor = self._redo.pop()
        return True

    def select(self, index: int) -> None:
        """Move the cursor (clamped); not an edit."""
        self.cursor = max(0, min(index, len(self.blocks) - 1)) if self.blocks else 0

    def add_block(self, model: str | None = None) -> None:
        """Add a slice after the cursor, continuing where the selected slice of that model ends."""
        if not self.sources:
            return
        prev = self.selected
        model = model or (prev.model if prev else self.model_names()[0])
        n = self.sources[model]
        if prev is not None and prev.model == model and prev.spans[0].end < n:
            start = prev.spans[0].end
            end = min(n, start + max(1, prev.length))
        else:
            start, end = 0, n
        self._edit()
        at = self.cursor + 1 if self.blocks else 0
        self.blocks.insert(at, Block([Span(model, start, end)]))
        self.cursor = at

    def set_source(self, model: str, span: int = 0) -> None:
        """Use `model` for one span of the selected slice, keeping the range within its layers."""
        b = self.selected
        if b is None or model not in self.sources or span >= len(b.spans):
            return
        self._edit()
        s = b.spans[span]
        n = self.sources[model]
        length = max(1, min(s.length, n))
        start = min(max(0, s.start), n - length)
        b.spans[span] = Span(model, start, start + length)

    def cycle_source(self, step: int = 1) -> None:
        """Switch the selected slice's primary source to the next (or previous) bench model."""
        b = self.selected
        names = self.model_names()
        if b is None or not names:
            return
        i = names.index(b.model) if b.model in names else -1
        self.set_source(names[(i + step) % len(names)])

    def move(self, delta: int) -> None:
        """Shift the selected slice's ranges by `delta` layers, staying inside each source."""
        b = self.selected
        if b is None:
            return
        shift = delta
        for s in b.spans:  # the largest shift every span allows
            n = self.sources.get(s.model, s.end)
            shift = min(shift, n - s.end) if delta > 0 else max(shift, -s.start)
        if shift == 0:
            return
        self._edit()
        for s in b.spans:
            s.start += shift
            s.end += shift

    def resize(self, delta: int, edge: str = "end") -> None:
        """Grow or shrink the selected slice at its end (or start) by `delta` layers."""
        b = self.selected
        if b is None:
            return
        new = []
        for s in b.spans:
            n = self.sources.get(s.model, s.end)
            start, end = (s.start, s.end + delta) if edge == "end" else (s.start - delta, s.end)
            if end - start < 1 or start < 0 or end > n:
                return  # every span must stay non-empty and in range
            new.append((start, end))
        self._edit()
        for s, (start, end) in zip(b.spans, new):
            s.start, s.end = start, end

    def duplicate(self) -> None:
        """Insert a copy of the selected slice after it."""
        b = self.selected
        if b is None:
            return
        self._edit()
        self.blocks.insert(self.cursor + 1, copy.deepcopy(b))
        self.cursor += 1

    def reorder(self, delta: int) -> None:
        """Move the selected slice up or down the output stack."""
        j = self.cursor + delta
        if self.selected is None or not 0 <= j < len(self.blocks):
            return
        self._edit()
        self.blocks[self.cursor], self.blocks[j] = self.blocks[j], self.blocks[self.cursor]
        self.cursor = j

    def delete(self) -> None:
        """Delete the selected slice."""
        if self.selected is None:
            return
        self._edit()
        del self.blocks[self.cursor]
        self.select(min(self.cursor, len(self.blocks) - 1))

    def add_span(self) -> None:
        """Combine another bench model into the selected slice (same range), for merging methods."""
        b = self.selected
        if b is None:
            return
        used = {s.model for s in b.spans}
        spare = [m for m in self.model_names() if m not in used]
        if not spare:
            return
        first = b.spans[0]
        n = self.sources[spare[0]]
        length = min(first.length, n)
        start = min(first.start, n - length)
        self._edit()
        b.spans.append(Span(spare[0], start, start + length))

    def remove_span(self) -> None:
        """Drop the last combined source of the selected slice."""
        b = self.selected
        if b is None or len(b.spans) < 2:
            return
        self._edit()
        b.spans.pop()

    def set_span_start(self, model: str, layer: int) -> None:
        """Mouse: make the selected slice take `model` starting at `layer` (length kept)."""
        b = self.selected
        if b is None or model not in self.sources:
            return
        n = self.sources[model]
        length = max(1, min(b.length, n))
        start = max(0, min(layer, n - length))
        self._edit()
        b.spans[0] = Span(model, start, start + length)

    # ---- config --------------------------------------------------------------------------
    def to_slices(self) -> list[OutputSlice]:
        """The blocks as mergekit `slices:` (layer_range is [start, end))."""
        return [OutputSlice(sources=[InputSlice(model=s.model, layer_range=(s.start, s.end)) for s in b.spans]) for b in self.blocks]

    def to_config(self, base: MergeConfig | None = None) -> MergeConfig:
        """A config with these slices; keeps `base`'s other settings (passthrough when single-source)."""
        data: dict[str, Any] = base.model_dump(exclude_none=True) if base else {}
        data.pop("models", None)
        data["slices"] = [s.model_dump(exclude_none=True) for s in self.to_slices()]
        if all(len(b.spans) == 1 for b in self.blocks):
            data["merge_method"] = "passthrough"  # stacking whole layers: nothing to combine
        elif data.get("merge_method", "passthrough") == "passthrough":
            data["merge_method"] = "linear"  # combined slices need a combining method
        return MergeConfig.model_validate(data)

    def load_slices(self, slices: list[OutputSlice]) -> None:
        """Replace the blocks with a config's slices (an undoable edit)."""
        self._edit()
        self.blocks = [Block([Span(s.model, s.layer_range[0], s.layer_range[1]) for s in sl.sources]) for sl in slices]
        self.select(self.cursor)

    def same_as(self, slices: list[OutputSlice] | None) -> bool:
        """Whether `slices` describe exactly these blocks."""
        return [s.model_dump(exclude_none=True) for s in (slices or [])] == [s.model_dump(exclude_none=True) for s in self.to_slices()]


def _short(ref: str) -> str:
    """The last path component of a model reference, for compact messages."""
    return ref.rstrip("/").rsplit("/", 1)[-1]
