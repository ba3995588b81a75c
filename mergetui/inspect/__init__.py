"""What can be known about models without their weights: sources, profiles, findings, estimates.

No textual and no torch in here: `mergetui check` and `mergetui inspect` answer from config
files, tokenizer files and safetensors headers (read locally, or by HTTP range reads from the
Hub), and the workbench calls the same functions from its workers.

Public API (import from the submodules; this package imports nothing heavy eagerly):
- profile.profile_model(ref) / profile_models(refs) -> Profile
- check.check_models(refs) / check_config(config, out_dir=, device=) -> Report
- findings.find_issues(profiles, config=None) -> list[Finding]
- estimate.estimate(config, profiles, out_dir=, device=) -> Estimate
- hub.search_models(query, author=, filter=, sort=, limit=) -> list[HubModel]
- hub.cached_repos() -> list[CachedRepo]
- report.Report (.to_json(), .exit_code) and render_report / render_profile (rich)
"""
