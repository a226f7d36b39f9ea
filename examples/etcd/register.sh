#!/usr/bin/env bash
# Register example instances the way a service would: a lease, a key under the prefix,
# and a heartbeat. Stop this script and the instances leave the catalog after the TTL.
set -euo pipefail
export ETCDCTL_API=3
ENDPOINTS=${ETCD_ENDPOINTS:-http://127.0.0.1:2379}
lease=$(etcdctl --endpoints="$ENDPOINTS" lease grant 10 | awk '{print $2}')
etcdctl --endpoints="$ENDPOINTS" put --lease="$lease" /services/users/users-1 \
  '{"address": "127.0.0.1:9001", "weight": 10, "tags": ["v2"], "registered_at": "2026-11-29T10:00:00Z"}'
etcdctl --endpoints="$ENDPOINTS" put --lease="$lease" /services/orders/orders-1 \
  '{"host": "127.0.0.1", "port": 9101, "state": "starting", "meta": {"zone": "a"}}'
echo "registered with lease $lease; keeping it alive (Ctrl-C to let it expire)" >&2
exec etcdctl --endpoints="$ENDPOINTS" lease keep-alive "$lease" >/dev/null
