-- nginxgen.imagefit: an image_fit route's content handler.
--
-- Only a width from the route's list ever reaches image_filter: the client's number (from
-- a query argument or a header, in the order the spec gives) picks the nearest allowed
-- one (a tie goes to the larger); no usable number gets the largest. The query argument
-- is then removed, so the upstream and the cache see one URL for every width.
--
-- The original comes from the route's internal location (the service's upstream, its
-- failover and timeouts, and a proxy_cache of originals). An image (200, image/*) is
-- printed here, where the route's image_filter resizes it on the way out. Anything else
-- (another status, another type, a HEAD, a method other than GET, an image larger than
-- image_filter_buffer) is handed to that
-- internal location whole with ngx.exec, so it passes untouched: image_filter would answer
-- 415 to a non-image. A non-image the cache may not keep is fetched twice.

local tonumber = tonumber
local find = string.find
local lower = string.lower
local gsub = string.gsub
local ipairs = ipairs
local pairs = pairs
local type = type

local _M = {}

local MAX_ARGS = 100
local config = {}

function _M.init(cfg)
    for _, fit in pairs(cfg) do
        local vars, args = {}, {}
        for i, src in ipairs(fit.sources) do
            if src[1] == "arg" then
                vars[i] = "arg_" .. src[2]
                args[#args + 1] = src[2]
            else
                vars[i] = "http_" .. gsub(lower(src[2]), "-", "_")
            end
        end
        fit.vars, fit.args = vars, args
    end
    config = cfg
end

-- widths (ascending) and a client's text → the allowed width nearest to it, or nil.
function _M.pick(widths, value)
    if type(value) ~= "string" or #value > 12 or not find(value, "^%d+%.?%d*$") then
        return nil
    end
    local wanted = tonumber(value)
    if not wanted or wanted < 1 then
        return nil
    end
    local best, distance = nil, nil
    for _, w in ipairs(widths) do
        local d = w > wanted and w - wanted or wanted - w
        if not distance or d <= distance then
            best, distance = w, d
        end
    end
    return best
end

-- Hop-by-hop and length headers are not the original's to pass on.
local SKIP = {
    ["content-length"] = true, ["transfer-encoding"] = true, ["connection"] = true,
    ["keep-alive"] = true,
}
local IMAGE_TYPES = {
    ["image/jpeg"] = true, ["image/png"] = true, ["image/gif"] = true, ["image/webp"] = true,
}

local function is_image(res)
    if res.truncated or res.status ~= 200 then
        return false
    end
    local ct = res.header["Content-Type"]
    if type(ct) ~= "string" then
        return false
    end
    return IMAGE_TYPES[lower((gsub(ct, "%s*;.*$", "")))] == true
end

function _M.serve(id, var)
    local fit = _M.choose(id, var)
    local ngx_var = ngx.var
    local path = string.match(ngx_var.request_uri, "^[^?]*")
    local args = ngx_var.args
    local uri = (args and args ~= "") and (path .. "?" .. args) or path
    ngx_var[fit.uri_var] = uri
    if ngx.req.get_method() ~= "GET" then
        return ngx.exec(fit.location)
    end
    local res = ngx.location.capture(fit.location, {
        method = ngx.HTTP_GET, vars = { [fit.uri_var] = uri },
    })
    -- image_filter answers 415 to an image larger than its buffer: such one goes as it came.
    if not is_image(res) or #res.body > fit.max_bytes then
        return ngx.exec(fit.location)
    end
    local header = ngx.header
    for name, value in pairs(res.header) do
        if not SKIP[lower(name)] then
            header[name] = value
        end
    end
    ngx.status = 200
    ngx.print(res.body)
end

function _M.choose(id, var)
    local fit = config[id]
    if not fit then
        ngx.log(ngx.ERR, "nginxgen.imagefit: no image_fit ", id, " in the configuration")
        return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
    end
    local ngx_var = ngx.var
    local chosen
    for _, name in ipairs(fit.vars) do
        chosen = _M.pick(fit.widths, ngx_var[name])
        if chosen then
            break
        end
    end
    ngx_var[var] = chosen or fit.widths[#fit.widths]
    local present = false
    for _, name in ipairs(fit.args) do
        if ngx_var["arg_" .. name] ~= nil then
            present = true
        end
    end
    if present then
        local args = ngx.req.get_uri_args(MAX_ARGS)
        for _, name in ipairs(fit.args) do
            args[name] = nil
        end
        ngx.req.set_uri_args(args)
    end
    return fit
end

return _M
