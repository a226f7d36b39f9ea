"""The values that flow between the stages: the Catalog a source reads (and the trust
boundary that builds it), what the watcher observed over time, and the Plan."""
