"""asv benchmarks of arn-sklearn (see ../asv.conf.json)."""
