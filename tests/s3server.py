"""The test suite's S3-compatible server: moto's server (the real S3 wire
protocol), with one test hook. While the file named by
FAXI_S3_CLOCK_OFFSET_FILE holds N, objects put are stamped N seconds in the
past, so tests can create backups of a controlled age."""

import datetime
import os
import sys

import moto.s3.models as s3_models
from moto.server import main

_real_utcnow = s3_models.utcnow


def _offset_seconds() -> float:
    path = os.environ.get("FAXI_S3_CLOCK_OFFSET_FILE")
    if not path:
        return 0.0
    try:
        with open(path) as f:
            return float(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0.0


def _utcnow() -> datetime.datetime:
    return _real_utcnow() - datetime.timedelta(seconds=_offset_seconds())


s3_models.utcnow = _utcnow

if __name__ == "__main__":
    main(sys.argv[1:])
