"""lakeshard: raw files to governed Delta lake tables, and balanced shards for GPU trainers."""

__version__ = "0.1.0"
