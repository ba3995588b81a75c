"""`mergetui check` and `mergetui inspect` on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mergetui.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp: Path, text: str) -> Path:
    p = tmp / f"cfg-{uuid.uuid4().hex[:6]}.yml"
    p.write_text(text)
    return p


def test_check_models_prints_findings_and_exits_1(tiny_model, capsys) -> None:
    a = tiny_model("llama", layers=2, seed=1)
    b = tiny_model("llama", layers=2, seed=1, extra_tokens=3)
    assert main(["check", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "embedding rows differ" in out and "<extra_0>" in out and "cannot merge as is" in out


def test_check_config_ok_and_json(tiny_model, tmp_path, capsys) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    b = tiny_model("llama", layers=4, seed=2, base=a)
    cfg = write_config(tmp_path, f"merge_method: slerp\nbase_model: {a}\nparameters: {{t: 0.5}}\nmodels:\n  - model: {a}\n  - model: {b}\n")
    assert main(["check", str(cfg), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "ok to merge" in out and "4 layers" in out and "peak RAM" in out
    assert main(["check", "--json", str(cfg)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["config"] == str(cfg)
    assert set(report) == {"version", "config", "ok", "counts", "models", "findings", "estimate"}
    assert report["estimate"]["output"]["layers"] == 4 and len(report["models"]) == 2


def test_check_config_with_errors_exits_1(tiny_model, tmp_path, capsys) -> None:
    a = tiny_model("llama", layers=4, seed=1)
    cfg = write_config(tmp_path, f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [2, 9]}}]\n")
    assert main(["check", "--json", str(cfg)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in report["findings"]] == ["layer-range-outside"]


def test_bad_input_exits_2_without_traceback(tmp_path, capsys) -> None:
    bad = write_config(tmp_path, "merge_method: linear\nmodels:\n  - model: [oops\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "malformed YAML" in err and f"{bad}:" in err
    assert main(["check", str(tmp_path / "missing.yml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "no" / "such" / "dir")]) == 2


def test_inspect_prints_one_profile(tiny_model, capsys) -> None:
    a = tiny_model("gpt2", layers=2, extra_tokens=1)
    assert main(["inspect", str(a)]) == 0
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "<extra_0>" in out and "tied" in out
    assert main(["inspect", "--json", "--tensors", str(a)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model_type"] == "gpt2" and d["embed_rows"] == 129 and "transformer.wte.weight" in d["tensors"]


def test_check_and_inspect_never_import_torch(hub, tiny_model, tmp_path) -> None:
    a = tiny_model("llama", layers=2, seed=1)
    b = tiny_model("mistral", layers=2, seed=1)
    repo = f"t{uuid.uuid4().hex[:8]}/remote"
    hub.add_repo(repo, a)
    cfg = write_config(tmp_path, f"merge_method: linear\nmodels:\n  - model: {a}\n  - model: {repo}\n")
    code = (
        "import sys, io, contextlib\n"
        "from mergetui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rcs = [main(['check', {str(a)!r}, {str(b)!r}]), main(['check', {str(cfg)!r}]), main(['inspect', {repo!r}])]\n"
        "print(rcs, sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'textual'))))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0, 0] []", r.stdout + r.stderr


def test_preflight_stops_on_errors_unless_allowed(tiny_model, tmp_path) -> None:
    import io

    from mergetui.commands.check import preflight
    from mergetui.engine.config import parse_config
    from mergetui.engine.errors import MergeError

    a = tiny_model("llama", layers=2, seed=1)
    b = tiny_model("llama", layers=2, seed=1, extra_tokens=2)
    cfg = parse_config(f"merge_method: linear\nmodels:\n  - model: {a}\n  - model: {b}\n")
    shown = io.StringIO()
    with pytest.raises(MergeError, match="--allow-crimes"):
        preflight(cfg, file=shown)
    assert "embedding rows differ" in shown.getvalue()
    report = preflight(cfg, allow_crimes=True, file=io.StringIO())
    assert report.has_errors
