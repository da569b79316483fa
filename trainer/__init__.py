"""recd's learning floor: interactions in, embedding models and reports out.

Nothing here talks to Kafka or Redis; the daemon hands plain arrays in and
publishes the snapshots that come out.
"""
