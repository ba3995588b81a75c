"""Speed and memory of `mergetui moe`: a 4-expert Mixtral from the Llama-shaped 1.1B bf16 models.

Uses (building once if missing) bench_merge.py's models under --dir: base, ft1, ft2. The
experts are base, ft1, ft2 and ft1 again, gate_mode random, bf16: 4 x 22 layers of MLPs plus
the base's attention, embeddings and head, about 6.8 GB written. Reports wall time and peak
RSS of the `mergetui moe` process (sampled every 20 ms), with a warm page cache; the output
is deleted afterwards.

    python benchmarks/bench_moe.py [--dir bench-out] [--extra "--workers 2"]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_merge import prepare_models, time_command  # noqa: E402

CONFIG = """base_model: {base}
gate_mode: random
dtype: bfloat16
experts_per_token: 2
experts:
  - source_model: {base}
  - source_model: {a}
  - source_model: {b}
  - source_model: {a}
"""


def main() -> int:
    """Build the models if needed, assemble the MoE once, print the numbers as a line and JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="bench-out", help="where models and the output go (needs ~7 GB free beyond the models)")
    ap.add_argument("--extra", default="", help="extra arguments for mergetui moe")
    args = ap.parse_args()
    root = Path(args.dir).resolve()
    base, a, b = prepare_models(root)

    measured = time_command("moe", CONFIG.format(base=base, a=a, b=b), root / "out-moe", args.extra.split())
    if measured is None:
        return 1
    result = {"moe 4 experts, random": measured}
    for k, v in result.items():
        print(f"{k}: {v['seconds']} s, peak RSS {v['peak_rss_gb']} GB, {v['output_gb']} GB written ({v['gb_per_s']} GB/s)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
