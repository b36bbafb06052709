"""Reward terms."""
