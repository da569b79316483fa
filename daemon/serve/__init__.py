"""Serving: claim changed users -> histories -> user vectors -> ANN index -> filter -> lists in Redis; cold
start from profile segments; similar items."""
