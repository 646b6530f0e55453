"""Rank statistics and paired comparisons over seeds, for trust.py."""
