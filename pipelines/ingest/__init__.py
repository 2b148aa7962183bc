"""Raw files to table rows, exactly once: file inspection (:mod:`.inspection`), which files a
run reads (:mod:`.fileplan`), Spark readers (:mod:`.reading`), validation and row rules
(:mod:`.validate`), the content hash (:mod:`.hashing`), writing a batch with its quarantine and
dedup (:mod:`.write`), the ingest run (:mod:`.run`) and quarantine replay (:mod:`.replay`)."""
