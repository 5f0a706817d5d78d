"""Turning result dataclasses into output: rich tables for people, JSON for scripts."""
