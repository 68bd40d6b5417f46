"""capsched: elastic capacity scheduler for LLM provisioned throughput."""

__version__ = "0.1.0"
