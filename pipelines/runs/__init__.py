"""A recorded run: its summary and the accounting identity (:mod:`.summary`), its lifecycle
under the dataset's lease with run-log records and abandoned runs closed (:mod:`.lifecycle`),
and progress through the ``lakeshard`` logger (:mod:`.progress`)."""
