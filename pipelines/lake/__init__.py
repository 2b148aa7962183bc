"""The lake's Delta tables: table I/O (:mod:`.delta`), a run's data commits (:mod:`.commits`),
the run log (:mod:`.runlog`), the file ledger (:mod:`.ledger`), the quarantine table
(:mod:`.quarantine`), the dataset lease (:mod:`.lease`), and a Spark-free reader of a Delta
log (:mod:`.deltalog`)."""
