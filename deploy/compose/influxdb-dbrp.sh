#!/bin/sh
# Runs once, after InfluxDB 2's first setup: maps the InfluxQL database
# "vatio" (default retention policy "autogen") to the bucket vatio writes,
# so vatio's reads on /query find it.
set -eu
influx v1 dbrp create \
  --org "$DOCKER_INFLUXDB_INIT_ORG" \
  --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
  --db vatio --rp autogen --default
