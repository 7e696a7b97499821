#!/bin/sh
# The app stand-in: busybox httpd on :4000 serving /www, so /health answers
# 200 "ok". It stops at once on SIGTERM (a bare httpd as PID 1 would ignore
# it, and every `docker stop` would wait for the engine's kill).
trap 'kill $pid 2>/dev/null; exit 0' TERM INT
httpd -f -p 4000 -h /www &
pid=$!
wait $pid
