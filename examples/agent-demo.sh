#!/usr/bin/env bash
# End-to-end demo of `nginxgen agent`: two backends, each wrapped by an agent that registers
# it in etcd; a gateway (nginx/OpenResty driven by `nginxgen watch`) follows the registry.
#
#   examples/agent-demo.sh            # needs: etcd, etcdctl, nginx (+ lua module), python3
#
# Without `nginxgen watch` (or with DEMO_GATEWAY=0) it shows the registry side only: what
# the agents write to etcd on start, failure, recovery and shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
NGINXGEN=(python3 -m nginxgen.cli)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step() { printf '\n\033[1;34m## %s\033[0m\n' "$*"; }

DEMO=$(mktemp -d /tmp/nginxgen-agent-demo.XXXXXX)
chmod 755 "$DEMO"  # nginx workers (user nobody) read the config from here
ETCD_PORT=$(free_port) PEER_PORT=$(free_port) GW_PORT=$(free_port)
A_PORT=$(free_port) B_PORT=$(free_port)
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="http://127.0.0.1:$ETCD_PORT"
pids=()
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT

gateway=1
if [ "${DEMO_GATEWAY:-1}" = 0 ] || ! "${NGINXGEN[@]}" watch --help >/dev/null 2>&1; then
  gateway=0
fi

step "etcd on 127.0.0.1:$ETCD_PORT"
etcd --name demo --data-dir "$DEMO/etcd" \
  --listen-client-urls "$ETCDCTL_ENDPOINTS" --advertise-client-urls "$ETCDCTL_ENDPOINTS" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" >"$DEMO/etcd.log" 2>&1 &
pids+=($!)
until etcdctl endpoint health >/dev/null 2>&1; do sleep 0.2; done

cat >"$DEMO/nginxgen.yaml" <<YAML
registry: {kind: etcd, url: "http://127.0.0.1:$ETCD_PORT"}
nginx: {listen: "127.0.0.1:$GW_PORT", output: build/nginx.conf, pid: build/nginx.pid}
routes:
  - {path: /, service: web}
YAML

registry() {  # one line per instance: key → state
  say "etcdctl get --prefix /services/web/"
  etcdctl get --prefix /services/web/ | paste - - | \
    python3 -c 'import json, sys
seen = False
for line in sys.stdin:
    seen = True
    key, value = line.rstrip("\n").split("\t", 1)
    v = json.loads(value)
    print(key, "state=" + v["state"], "address=" + v["address"], "registered_at=" + v["registered_at"])
if not seen: print("(no instances)")'
}

traffic() {  # who answers 20 requests through the gateway
  [ "$gateway" = 1 ] || return 0
  say "for i in \$(seq 20); do curl -s 127.0.0.1:$GW_PORT/; done | sort | uniq -c"
  for _ in $(seq 20); do curl -s --max-time 2 "127.0.0.1:$GW_PORT/" || echo "(no answer)"; echo; done | sort | uniq -c
}

start_backend() {  # name port: a python http.server wrapped by the agent
  local name=$1 port=$2
  mkdir -p "$DEMO/$name"
  echo "backend $name" >"$DEMO/$name/index.html"
  echo ok >"$DEMO/$name/healthz"
  "${NGINXGEN[@]}" agent -c "$DEMO/nginxgen.yaml" --service web --id "web-$name" \
    --address "127.0.0.1:$port" --ttl 3s --health-url "http://127.0.0.1:$port/healthz" \
    --health-interval 0.5s --rise 2 --fall 3 --wait-healthy --drain 3s -- \
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$DEMO/$name" \
    2> >(grep --line-buffered -E ' agent |error' >&2) &
  pids+=($!)
  eval "AGENT_$name=$!"
}

step "start: two backends, each wrapped by an agent (registers once healthy)"
say "nginxgen agent -c nginxgen.yaml --service web --id web-a --address 127.0.0.1:$A_PORT --ttl 3s --health-url http://127.0.0.1:$A_PORT/healthz --health-interval 0.5s --wait-healthy --drain 3s -- python3 -m http.server $A_PORT ..."
start_backend a "$A_PORT"
start_backend b "$B_PORT"
for _ in $(seq 100); do
  [ "$(etcdctl get --prefix /services/web/ --keys-only | grep -c web-)" = 2 ] && break
  sleep 0.2
done
registry

if [ "$gateway" = 1 ]; then
  step "gateway: nginx on 127.0.0.1:$GW_PORT, kept in step by nginxgen watch"
  mkdir -p "$DEMO/build"
  "${NGINXGEN[@]}" render -c "$DEMO/nginxgen.yaml" -o "$DEMO/build/nginx.conf"
  nginx -c "$DEMO/build/nginx.conf" -e stderr -g 'daemon off;' 2>"$DEMO/nginx.log" &
  pids+=($!)
  "${NGINXGEN[@]}" watch -c "$DEMO/nginxgen.yaml" 2>"$DEMO/watch.log" &
  pids+=($!)
  until curl -s "127.0.0.1:$GW_PORT/" >/dev/null; do sleep 0.2; done
  sleep 3  # past the warm-up ramp
  traffic
fi

step "failure: backend a's health URL starts failing (its process stays up)"
say "mv a/healthz a/healthz.off"
mv "$DEMO/a/healthz" "$DEMO/a/healthz.off"
sleep 2.5  # fall 3 x 0.5s, plus the gateway's debounce
registry
traffic

step "recovery: a is healthy again"
say "mv a/healthz.off a/healthz"
mv "$DEMO/a/healthz.off" "$DEMO/a/healthz"
sleep 2
registry
traffic

step "shutdown: SIGTERM to b's agent (drains 3s, deregisters, then stops the server)"
say "kill -TERM <agent b>"
kill -TERM "$AGENT_b"
sleep 1
registry
traffic
rc=0; wait "$AGENT_b" || rc=$?
echo "agent b exited with code $rc (http.server's own: 128 + SIGTERM; a graceful server gives 0)"
registry

step "crash: SIGKILL to a's agent; etcd drops the key when the 3s lease runs out"
say "kill -KILL <agent a>"
kill -KILL "$AGENT_a"
wait "$AGENT_a" 2>/dev/null || true
sleep 0.5
registry
sleep 4
registry
traffic
say "curl 127.0.0.1:$A_PORT/   # the wrapped server got SIGTERM when its agent died"
curl -s --max-time 2 "127.0.0.1:$A_PORT/" || echo "(connection refused)"
