"""Offline evaluation: protocols, metrics, baselines (implicit, gensim), tuning, reports and plots.
Models never import this package; it imports them."""
