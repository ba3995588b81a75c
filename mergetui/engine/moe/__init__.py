"""Mixture-of-Experts assembly from dense models (mergekit-moe's configs): plan, route, write."""

from mergetui.engine.moe.config import MoEConfig, load_moe_config, parse_moe_config

__all__ = ["MoEConfig", "load_moe_config", "parse_moe_config"]
