"""Searches that are commands of their own (kdrun-ptloss-search)."""
