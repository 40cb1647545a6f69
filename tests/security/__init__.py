"""Regression tests for River's trust boundaries, each written as the attack it stops."""
