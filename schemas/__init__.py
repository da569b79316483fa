"""recd's contracts: events, profiles, recommendation records, model manifests.

This package imports nothing else of recd.
"""
