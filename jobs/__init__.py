"""spark-submit entry points: ``spark-submit jobs/<verb>.py ARGS...``."""
