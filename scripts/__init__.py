"""Helper scripts. A regular package so that ``scripts.dagster_graphql`` (imported by the tests
from the repository root) cannot resolve to some installed distribution's ``scripts``."""
