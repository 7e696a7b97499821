"""The stack's S3-compatible server: moto's server (the real S3 wire
protocol, objects in memory) on 0.0.0.0:9000, with Faxi's buckets made at
start and a first backup object, so that the backup target is fresh (UP)
until it is older than its RPO.

Environment: FAXI_S3_BUCKETS (space-separated bucket names) and
FAXI_S3_SEED (bucket/key objects to put, space-separated). moto takes any
access key; the nodes sign with theirs all the same. /tmp/ready exists once
the buckets are made (the container's health check). Stops on SIGTERM.
"""

import os
import signal
import sys
import threading

import boto3
from moto.server import ThreadedMotoServer

PORT = 9000
READY = "/tmp/ready"


def main():
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{PORT}",
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    for bucket in os.environ.get("FAXI_S3_BUCKETS", "").split():
        s3.create_bucket(Bucket=bucket)
    for obj in os.environ.get("FAXI_S3_SEED", "").split():
        bucket, _, key = obj.partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=b"seeded at start\n")
    with open(READY, "w") as f:
        f.write("ready\n")  # the container's health check
    print(f"s3: serving on :{PORT}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
