"""Storage below the tables: pyarrow filesystems (:mod:`.arrowfs`), the boto3 S3 client and the
lake-reachable check (:mod:`.s3`), and source listing through Spark's file index
(:mod:`.listing`). Settings come from :mod:`pipelines.config`."""
