"""Schema governance: dataset declarations (:mod:`.datasets`, :mod:`.declarations`), Spark SQL
types (:mod:`.types`), compatibility between versions (:mod:`.compat`), evolution of a live table
(:mod:`.evolution`), row rules and their CHECK constraints (:mod:`.rules`, :mod:`.expressions`),
the table schema a declaration gives (:mod:`.tables`), and ``schema check|history``
(:mod:`.governance`)."""
