"""Dagster Definitions for the curation pipeline."""
