"""Names nginxgen gives things in nginx.conf, in one place: the plan decides with them, the
templates write them, verify and lint recognise them, and the Lua modules read them."""

from __future__ import annotations

# Variables the templates set and the Lua/log format read.
ROUTE_VAR = "nginxgen_route"
CONN_ZONE = "nginxgen_conn_client_ip"
METRICS_DICT = "nginxgen_metrics"
# server_name of the loopback status/metrics server; lint recognises it by this name.
STATUS_SERVER_NAME = "nginxgen_status"
METRICS_DICT_SIZE = "4m"  # ~10k routes x status classes x buckets fits comfortably
AUTH_PREFIX = "/_nginxgen/auth/"  # internal locations for auth_request subrequests
# services.NAME.split (lua/nginxgen/split.lua): its shared dict, the variable a split
# route proxies to, the internal mirror locations, the status listener's push and status.
SPLIT_DICT = "nginxgen_split"
SPLIT_DICT_SIZE = "1m"  # a document is < 2 KB; room for hundreds of split services
SPLIT_VAR = "nginxgen_split_upstream"
# A route whose service may have nobody to serve (Location.nobody_check "page") names the
# service in this variable and sends nginx's 500 to this named location, which answers
# the 503 on purpose (lua/nginxgen/balancer.lua, unavailable()).
SERVICE_VAR = "nginxgen_service"
NOBODY_PAGE = "@nginxgen_503"
MIRROR_PREFIX = "/_nginxgen/mirror/"
SPLIT_PATH = "/nginxgen/split"
SPLIT_STATUS_PATH = "/nginxgen/split/status"
# Beside nginx.conf: the documents in force (read by nginx at start and reload).
SPLIT_STATE = "nginxgen-split.json"
KEY_DIGEST_VAR = "nginxgen_key_digest"  # sha256 of the presented API key (set_by_lua)
# The endpoint feed (nginx.endpoints dynamic, lua/nginxgen/endpoints.lua): its shared
# dict, the balancer's passive health, the status listener's feed location.
FEED_DICT = "nginxgen_endpoints"
HEALTH_DICT = "nginxgen_health"
HEALTH_DICT_SIZE = "4m"  # ~10,000 failing peers (docs/endpoints-feed.md)
FEED_PATH = "/nginxgen/endpoints"
FEED_STATUS_PATH = "/nginxgen/endpoints/status"
FEED_MAX_BODY = "32m"  # the Lua side's own default max_body
# The Redis cache's stampede locks and Redis health, shared by all workers.
CACHE_STATE_DICT = "nginxgen_cache"
CACHE_STATE_DICT_SIZE = "1m"

# Forwarding headers the gateway does not set itself, cleared on every proxied request
# (routes and auth subrequests): a client must not tell an application which prefix,
# scheme, server or client certificate it came through. X-Forwarded-For, -Proto, -Host,
# -Port and X-Real-IP are set by the gateway instead (templates/location.conf.j2).
FORWARDING_CLEARED = (
    "Forwarded",
    "X-Forwarded-Prefix",
    "X-Forwarded-Scheme",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Forwarded-Uri",
    "X-Forwarded-Path",
    "X-Forwarded-Method",
    "X-Forwarded-Protocol",
    "X-Forwarded-Client-Cert",
)
