-- nginxgen.imagefit: which width an image_fit route resizes to.
--
-- Only a width from the route's list ever reaches image_filter: the client's number (from
-- a query argument or a header, in the order the spec gives) picks the nearest allowed
-- one (a tie goes to the larger); no usable number gets the largest. The query argument
-- is then removed, so the upstream and the cache see one URL for every width.

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

function _M.rewrite(id, var)
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
end

return _M
