"""`nginxgen status`: what the running sidecar says about each instance (docs/monitoring.md).

traffic  requests and 5xx per upstream peer over the last minute, from nginx's /metrics
view     the sidecar's status document → rich tables, one per service
"""
