"""Pull sources: usage read from where it already lives (CloudWatch, Azure Monitor,
Prometheus) and written through the ingest write path. See :mod:`.pull` for the run of one
pull and :mod:`.base` for the contract every source follows."""
