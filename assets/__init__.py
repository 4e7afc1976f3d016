"""Thin Dagster assets over the ``curation`` core: config in, one core call, metadata out."""
