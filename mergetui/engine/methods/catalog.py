"""The method names, importable without torch (the workbench lists them before torch loads).

tests/test_methods_more.py checks this list against the registry, so it cannot drift.
"""

METHOD_NAMES: tuple[str, ...] = (
    "linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties", "dare_ties",
    "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "sce", "model_stock",
    "nearswap", "arcee_fusion", "ram", "ramplus_tl", "passthrough",
)
