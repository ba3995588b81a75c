"""The layout editor's model: slice operations, undo/redo, validation, config round trip."""

from __future__ import annotations

from mergetui.engine.config import parse_config
from mergetui.layout_model import LayoutModel


def model() -> LayoutModel:
    return LayoutModel(sources={"a": 8, "b": 8, "c": 4})


def test_add_continues_the_selected_slice() -> None:
    m = model()
    m.add_block()
    assert [(s.model, s.start, s.end) for s in m.blocks[0].spans] == [("a", 0, 8)]
    m.resize(-4)  # a [0, 4)
    m.add_block()  # continues a where the selected slice ends
    assert (m.blocks[1].spans[0].start, m.blocks[1].spans[0].end) == (4, 8)
    assert m.output_layers == 8 and m.cursor == 1


def test_source_move_resize_stay_in_range() -> None:
    m = model()
    m.add_block()
    m.cycle_source()  # a -> b, keeps [0, 8)
    assert m.selected.model == "b"
    m.cycle_source()  # b -> c has 4 layers: clamped
    assert (m.selected.spans[0].start, m.selected.spans[0].end) == (0, 4)
    m.move(5)  # cannot move past the end
    assert (m.selected.spans[0].start, m.selected.spans[0].end) == (0, 4)
    m.resize(-2)
    m.move(5)
    assert (m.selected.spans[0].start, m.selected.spans[0].end) == (2, 4)
    m.resize(-5)  # would empty the span: refused
    assert m.selected.length == 2
    m.resize(1, "start")
    assert (m.selected.spans[0].start, m.selected.spans[0].end) == (1, 4)


def test_duplicate_reorder_delete_undo_redo() -> None:
    m = model()
    m.add_block()
    m.resize(-6)  # a [0, 2)
    m.duplicate()
    m.cycle_source()  # copy becomes b [0, 2)
    m.reorder(-1)
    assert [b.model for b in m.blocks] == ["b", "a"] and m.cursor == 0
    m.delete()
    assert [b.model for b in m.blocks] == ["a"]
    assert m.undo() and [b.model for b in m.blocks] == ["b", "a"]
    assert m.undo() and [b.model for b in m.blocks] == ["a", "b"]
    assert m.redo() and [b.model for b in m.blocks] == ["b", "a"]
    m.add_block()  # a new edit clears the redo history
    assert not m.can_redo


def test_validation_messages() -> None:
    m = model()
    assert m.validate()[0].message.startswith("no slices")
    m.add_block()
    m.blocks[0].spans[0].end = 12
    assert any("outside its 8 layers" in i.message for i in m.validate())
    m.blocks[0].spans[0].end = 0
    assert any("is empty" in i.message for i in m.validate())
    m.blocks[0].spans[0].end = 4
    m.add_span()  # combine b over the same range
    m.blocks[0].spans[1].end = 3
    assert any("different lengths" in i.message for i in m.validate())
    m.blocks[0].spans[1].end = 4
    assert m.validate() == []


def test_to_config_round_trip_and_summary() -> None:
    m = model()
    m.add_block()
    m.resize(-4)  # a [0, 4)
    m.add_block("b")  # b [0, 8)
    m.move(0)
    cfg = m.to_config()
    assert cfg.merge_method == "passthrough"
    again = parse_config(cfg.to_yaml())
    assert [s.sources[0].layer_range for s in again.slices] == [(0, 4), (0, 8)]
    other = LayoutModel(sources=m.sources)
    other.load_slices(again.slices)
    assert other.same_as(again.slices) and other.output_layers == 12
    s = m.summary({"a": 10, "b": 10}, other_params=5, bytes_per_param=2)
    assert s == {"layers": 12, "parameters": 125, "bytes": 250}
    m.add_span()
    assert m.to_config().merge_method == "linear"  # combined slices need a combining method
