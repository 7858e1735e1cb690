"""A resilient LLM failover router (public API assembled in a later step)."""
