#!/usr/bin/env bash
# End-to-end demo of the whole loop: two backends, each wrapped by `nginxgen agent`, which
# registers it in etcd; nginx kept in step with etcd by `nginxgen watch`. Walks through
# start, a failing health check, recovery, an etcd outage, a crashed agent and a graceful
# shutdown, printing what etcd holds and who answers requests through nginx at each step.
#
#   examples/agent-demo.sh        # needs: etcd, etcdctl, nginx, curl (about 60s)
#   PYTHON=/path/to/python examples/agent-demo.sh   # the interpreter that has nginxgen's deps
#
# nginxgen runs as `$PYTHON -m nginxgen.cli` from this checkout; without PYTHON the demo
# takes the checkout's .venv/bin/python, else `nginxgen` on PATH, else python3. The backends
# are `$PYTHON -m http.server`. A process that dies early stops the demo with its log.
#
# Everything listens on free 127.0.0.1 ports and lives in a temp dir; the trap stops every
# process it started and removes the dir, also on Ctrl-C or a failed step.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
NGINXGEN=()
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PYTHON=$PWD/.venv/bin/python
elif [ -z "${PYTHON:-}" ] && command -v nginxgen >/dev/null; then
  PYTHON=python3 NGINXGEN=(nginxgen) # an installed nginxgen; python3 only runs the stdlib
fi
PYTHON=${PYTHON:-python3}
[ ${#NGINXGEN[@]} -gt 0 ] || NGINXGEN=("$PYTHON" -m nginxgen.cli)
for tool in etcd etcdctl nginx curl "$PYTHON"; do
  command -v "$tool" >/dev/null || { echo "agent-demo: $tool is not installed" >&2; exit 2; }
done
# Fail here, with the real error, rather than wait for agents that cannot start.
if ! err=$("${NGINXGEN[@]}" --help 2>&1 >/dev/null); then
  echo "agent-demo: cannot run ${NGINXGEN[*]} (set PYTHON to an interpreter with nginxgen's" \
    "dependencies, e.g. PYTHON=.venv/bin/python):" >&2
  printf '%s\n' "$err" | tail -n 5 >&2
  exit 2
fi

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { printf '\n$ %s\n' "$*"; }
step() { printf '\n## %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds; say how long it took. Stops the
# demo at once when a process it started has died (see all_alive).
wait_for() {
  local limit=$1 what=$2 start
  shift 2
  start=$(now)
  until "$@"; do
    all_alive
    if awk -v a="$start" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "agent-demo: gave up waiting for $what after ${limit}s" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "($what after $(since "$start"))"
}

DEMO=$(mktemp -d /tmp/nginxgen-agent-demo.XXXXXX)
chmod 755 "$DEMO" # nginx's workers (user nobody when started as root) read from here
ETCD_PORT=$(free_port) PEER_PORT=$(free_port) GW_PORT=$(free_port)
STATUS_PORT=$(free_port) HEALTH_PORT=$(free_port) A_PORT=$(free_port) B_PORT=$(free_port)
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="http://127.0.0.1:$ETCD_PORT"
ETCD_PID= NGINX_PID= WATCH_PID= AGENT_a= AGENT_b= LEAVING=

# all_alive: every process the demo expects to run still runs; else it prints the end of
# the dead one's log and exits. A step that stops a process on purpose clears its variable
# (LEAVING holds one on its way out, for cleanup).
all_alive() {
  local entry var
  for entry in ETCD_PID:etcd NGINX_PID:nginx WATCH_PID:watch AGENT_a:agent-a AGENT_b:agent-b; do
    var=${entry%%:*}
    [ -z "${!var}" ] || kill -0 "${!var}" 2>/dev/null && continue
    echo "agent-demo: ${entry#*:} exited early; the end of its log:" >&2
    tail -n 20 "$DEMO/${entry#*:}.log" >&2 || true
    exit 1
  done
}

stop() { # stop PID...: SIGTERM, a second one (agents: skip the drain), SIGKILL after 10s
  local pid
  for pid in "$@"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "$@"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
cleanup() {
  trap - EXIT INT TERM
  # Agents first, while etcd can still take their deregistration; etcd last.
  stop "$AGENT_a" "$AGENT_b" "$LEAVING"
  stop "$WATCH_PID" "$NGINX_PID"
  stop "$ETCD_PID"
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "etcd on 127.0.0.1:$ETCD_PORT (data in $DEMO/etcd, removed at the end)"
start_etcd() {
  etcd --name demo --data-dir "$DEMO/etcd" \
    --listen-client-urls "$ETCDCTL_ENDPOINTS" --advertise-client-urls "$ETCDCTL_ENDPOINTS" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" >>"$DEMO/etcd.log" 2>&1 &
  ETCD_PID=$!
  wait_for 30 "etcd healthy" etcdctl endpoint health --command-timeout=1s >/dev/null 2>&1
}
start_etcd

cat >"$DEMO/nginxgen.yaml" <<YAML
registry: {kind: etcd, url: "http://127.0.0.1:$ETCD_PORT"}
nginx:
  listen: 127.0.0.1:$GW_PORT
  status_listen: 127.0.0.1:$STATUS_PORT
  output: build/nginx.conf
  pid: build/nginx.pid
watch:
  listen: 127.0.0.1:$HEALTH_PORT
  debounce: {min: 200ms, max: 2s}
routes:
  - {path: /, service: web}
YAML
say "cat nginxgen.yaml"
cat "$DEMO/nginxgen.yaml"

registry() { # one line per instance: key, state, address, registered_at
  say "etcdctl get --prefix /services/web/"
  etcdctl get --prefix /services/web/ | paste - - | "$PYTHON" -c '
import json, sys
lines = [line.rstrip("\n").split("\t", 1) for line in sys.stdin]
for key, value in lines:
    v = json.loads(value)
    print(key, "state=" + v["state"], "address=" + v["address"], "registered_at=" + v["registered_at"])
if not lines:
    print("(no instances)")'
}

answer() { # the first line of one answer through nginx
  local line
  line=$(curl -s --max-time 5 -w '\n' "127.0.0.1:$GW_PORT/" | head -n 1) || true
  echo "${line:-(no answer)}"
}

traffic() { # who answers 20 requests through nginx
  say "for i in \$(seq 20); do curl -s 127.0.0.1:$GW_PORT/; done | sort | uniq -c"
  for _ in $(seq 20); do answer; done | sort | uniq -c
}

healthz() {
  say "curl 127.0.0.1:$HEALTH_PORT/healthz   # nginxgen watch"
  curl -s -w ' (HTTP %{http_code})\n' "127.0.0.1:$HEALTH_PORT/healthz" || true
}

# The gateway answers only from these backends (20 requests, each answering).
only() {
  local seen
  seen=$(for _ in $(seq 20); do answer; done | sort -u | paste -sd ' ')
  [ "$seen" = "$*" ]
}
key_state() { # key_state NAME STATE: etcd holds web-NAME in STATE ("gone": no key)
  local value
  value=$(etcdctl get --print-value-only "/services/web/web-$1" 2>/dev/null) || return 1
  if [ "$2" = gone ]; then [ -z "$value" ]; else [[ "$value" == *"\"state\":\"$2\""* ]]; fi
}

start_backend() { # name port: python's http.server, wrapped by an agent
  local name=$1 port=$2
  mkdir -p "$DEMO/$name"
  echo "backend $name" >"$DEMO/$name/index.html"
  echo ok >"$DEMO/$name/healthz"
  # All of it in agent-NAME.log; on screen only the agent's own lines (http.server logs
  # every health probe).
  "${NGINXGEN[@]}" agent -c "$DEMO/nginxgen.yaml" --service web --id "web-$name" \
    --address "127.0.0.1:$port" --ttl 3s --health-url "http://127.0.0.1:$port/healthz" \
    --health-interval 0.5s --rise 2 --fall 3 --wait-healthy --drain 3s -- \
    "$PYTHON" -m http.server "$port" --bind 127.0.0.1 --directory "$DEMO/$name" \
    > /dev/null 2> >(tee -a "$DEMO/agent-$name.log" | grep --line-buffered ' agent ' >&2) &
  eval "AGENT_$name=$!"
}

step "start: two backends, each wrapped by an agent that registers it once healthy"
say "nginxgen agent -c nginxgen.yaml --service web --id web-a --address 127.0.0.1:$A_PORT \\
    --ttl 3s --health-url http://127.0.0.1:$A_PORT/healthz --health-interval 0.5s --rise 2 --fall 3 \\
    --wait-healthy --drain 3s -- $PYTHON -m http.server $A_PORT --bind 127.0.0.1   # and web-b on $B_PORT"
start_backend a "$A_PORT"
start_backend b "$B_PORT"
wait_for 30 "both registered" eval 'key_state a up && key_state b up'
registry

step "gateway: nginx on 127.0.0.1:$GW_PORT, kept in step with etcd by nginxgen watch"
mkdir -p "$DEMO/build"
say "nginxgen watch -c nginxgen.yaml --once   # first config, before nginx runs"
"${NGINXGEN[@]}" watch -c "$DEMO/nginxgen.yaml" --once 2>&1 | grep -v '^$' || true
say "nginx -c build/nginx.conf; nginxgen watch -c nginxgen.yaml &"
nginx -c "$DEMO/build/nginx.conf" -e "$DEMO/nginx.log" -g 'daemon off;' 2>>"$DEMO/nginx.log" &
NGINX_PID=$!
"${NGINXGEN[@]}" watch -c "$DEMO/nginxgen.yaml" \
  2> >(tee -a "$DEMO/watch.log" | grep --line-buffered -vE 'listening|^ *$' >&2) &
WATCH_PID=$!
wait_for 30 "watch healthy" curl -sf "127.0.0.1:$HEALTH_PORT/healthz" -o /dev/null
wait_for 30 "gateway answering" only "backend a" "backend b"
traffic
healthz

step "failure: backend a's health URL starts failing (its process stays up)"
say "mv a/healthz a/healthz.off"
mv "$DEMO/a/healthz" "$DEMO/a/healthz.off"
wait_for 30 "a out of the gateway" only "backend b"
registry
traffic

step "recovery: a's health URL answers again"
say "mv a/healthz.off a/healthz"
mv "$DEMO/a/healthz.off" "$DEMO/a/healthz"
wait_for 30 "a back in the gateway" only "backend a" "backend b"
registry

step "registry outage: etcd stops; nginx keeps the last good config, nobody exits"
say "kill -TERM <etcd>"
stop "$ETCD_PID"
ETCD_PID=
wait_for 30 "watch reports stale data" eval '! curl -sf "127.0.0.1:$HEALTH_PORT/healthz" >/dev/null'
sleep 4 # longer than the agents' 3s TTL
healthz
traffic
say "etcd ...   # the same data dir and ports"
start_etcd
wait_for 30 "watch healthy again" curl -sf "127.0.0.1:$HEALTH_PORT/healthz" -o /dev/null
wait_for 30 "both registered" eval 'key_state a up && key_state b up'
registry
traffic

step "crash: SIGKILL to a's agent (its server dies with it); etcd drops the key when the 3s lease runs out"
say "kill -KILL <agent a>"
kill -KILL "$AGENT_a"
wait "$AGENT_a" 2>/dev/null || true
AGENT_a=
traffic # a's server is gone: nginx retries those requests on b (see nginx.log)
wait_for 30 "a's key expired" key_state a gone
wait_for 30 "a out of the gateway" only "backend b"
registry

step "shutdown: SIGTERM to b's agent (draining 3s, deregister, then stop the server)"
say "kill -TERM <agent b>"
LEAVING=$AGENT_b AGENT_b=
kill -TERM "$LEAVING"
wait_for 10 "b draining" key_state b draining
registry
rc=0
wait "$LEAVING" || rc=$?
LEAVING=
echo "agent b exited with code $rc (http.server's own: 128 + SIGTERM; a graceful server gives 0)"
registry
wait_for 30 "the route answering 503" only '{"error":"service unavailable","service":"web"}'
say "curl -si 127.0.0.1:$GW_PORT/"
curl -si "127.0.0.1:$GW_PORT/" | grep -vE '^(Server|Date|Connection|Content-Length):' || true
echo
