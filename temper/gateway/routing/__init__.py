"""Routing policies, one file each: rules.py, cascade.py, learned.py (see base.py for the interface)."""
from temper.gateway.routing.base import POLICIES, Decision, Policy, PolicyError, RouteRequest, build_policy, register

__all__ = ["POLICIES", "Decision", "Policy", "PolicyError", "RouteRequest", "build_policy", "register"]
