-- nginxgen.aggregate: one request, several services, one JSON answer, inside nginx.
--
-- nginxgen renders each aggregate route's table once into init_by_lua_block (`init`); the
-- route's location calls serve(id) as its content handler. Each part is a subrequest to
-- its own internal location (ngx.location.capture_multi: all in parallel), which proxies
-- to the part's service through the ordinary upstream, failover, tries and timeouts, the
-- timeouts capped by the part's budget (connect, each read, retries): a subrequest has no
-- timeout of its own, the part's location is what bounds it.
--
-- What a part gets: the client's headers (a subrequest shares them: credentials, cookies),
-- the request id the answer carries, the auth service's forwarded headers (copied into the
-- capture's own variables), and the URI its template makes (nginxgen.aggregate.path).
-- The answer: {"part": <its JSON as it came, filtered by allow/deny>, ...} in spec order;
-- a part that failed is null, listed in X-Nginxgen-Failed-Parts, and the answer says
-- X-Nginxgen-Complete: false; a required part that failed makes it a 502 naming that part.

local path = require("nginxgen.aggregate.path")
local merge = require("nginxgen.aggregate.merge")

local ngx = ngx
local ngx_var = ngx.var
local ngx_req = ngx.req
local ngx_header = ngx.header
local capture_multi = ngx.location.capture_multi
local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local sort = table.sort
local type = type
local error = error

local _M = { _VERSION = "0.1.0" }

local MAX_ARGS = 100
local FAILED_HEADER = "X-Nginxgen-Failed-Parts"
local COMPLETE_HEADER = "X-Nginxgen-Complete"

local config = {}

function _M.init(cfg)
    for id, agg in pairs(cfg) do
        if type(agg.parts) ~= "table" or #agg.parts == 0 then
            error("nginxgen.aggregate: aggregate " .. id .. " has no parts")
        end
        agg.copy_vars = agg.copy_vars or {}
    end
    config = cfg
end

-- The raw value a placeholder reads from this request.
local function lookup_in(st)
    return function(piece)
        if piece.var then
            return ngx_var[piece.var]
        end
        if piece.arg then
            if not st.args then
                st.args = ngx_req.get_uri_args(MAX_ARGS)
            end
            local v = st.args[piece.arg]
            if type(v) == "table" then
                return nil  -- given twice: which one is meant is not ours to guess
            end
            return v
        end
        return path.segment(ngx_var.uri, piece.segment)
    end
end

local function answer(status, body, failed)
    ngx.status = status
    ngx_header["Content-Type"] = "application/json"
    ngx_header[COMPLETE_HEADER] = #failed == 0 and "true" or "false"
    if #failed > 0 then
        ngx_header[FAILED_HEADER] = concat(failed, ", ")
        -- A partial answer is for now only: no cache (nginxgen's or another) may keep it.
        ngx_header["Cache-Control"] = "no-store"
    end
    ngx_header["Content-Length"] = #body
    if ngx_req.get_method() ~= "HEAD" then
        ngx.print(body)
    end
    return ngx.exit(status)
end

-- One part's answer → its JSON text, or nil and why it failed.
local function part_text(part, res)
    if res.truncated then
        return nil, "truncated"
    end
    local status = res.status
    if status < 200 or status > 299 then
        return nil, "status " .. status
    end
    local text, why = merge.check(res.body)
    if not text then
        return nil, why
    end
    return merge.filter(text, part.allow, part.deny)
end

function _M.serve(id)
    local agg = config[id]
    if not agg then
        ngx.log(ngx.ERR, "nginxgen.aggregate: no aggregate ", id, " in the configuration")
        return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
    end
    local method = ngx_req.get_method()
    if method ~= "GET" and method ~= "HEAD" then
        ngx_header["Allow"] = "GET, HEAD"
        return answer(405, '{"error":"method not allowed"}', {})
    end
    -- Every part carries the id this answer does (a capture would make its own).
    ngx_req.set_header("X-Request-ID", ngx_var.nginxgen_request_id)
    local copied = {}
    for _, name in ipairs(agg.copy_vars) do
        copied[name] = ngx_var[name] or ""
    end
    local st = {}
    local lookup = lookup_in(st)
    local names, texts, failed = {}, {}, {}
    local requests, which = {}, {}
    for i, part in ipairs(agg.parts) do
        names[i] = part.name
        local uri, source, why = path.expand(part.pieces, lookup)
        if uri then
            local vars = { [agg.uri_var] = uri }
            for k, v in pairs(copied) do
                vars[k] = v
            end
            requests[#requests + 1] = { part.location, { method = ngx.HTTP_GET, vars = vars } }
            which[#requests] = i
        elseif part.required then
            -- The client's request lacks what this part needs: its error, not a backend's.
            return answer(400, merge.encode({
                error = "missing or unusable value", part = part.name, from = source,
                reason = why,
            }), { part.name })
        else
            failed[#failed + 1] = i
        end
    end
    local results = #requests > 0 and { capture_multi(requests) } or {}
    for k, res in ipairs(results) do
        local i = which[k]
        local text = part_text(agg.parts[i], res)
        if text then
            texts[i] = text
        else
            failed[#failed + 1] = i
        end
    end
    sort(failed)
    local failed_names = {}
    for n, i in ipairs(failed) do
        failed_names[n] = names[i]
    end
    for _, i in ipairs(failed) do
        local part = agg.parts[i]
        if part.required then
            return answer(502, merge.encode({
                error = "required part failed", part = part.name,
            }), failed_names)
        end
    end
    return answer(200, merge.object(names, texts), failed_names)
end

return _M
