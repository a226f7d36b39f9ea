-- Stands in for OpenResty's resty.redis, which Debian does not package: Debian's nginx.redis
-- (the same library, an older release) behind the newer API. set_timeouts(connect, send,
-- read) is what resty.redis >= 0.28 offers; set_timeout is refused, so a test that runs the
-- cache with this module on lua_package_path proves the resty.redis code path end to end.
local base = require("nginx.redis")

local _M = {}

local methods = setmetatable({}, { __index = base })

function methods.set_timeout()
    error("resty shim: set_timeout called; resty.redis users must get set_timeouts")
end

function methods.set_timeouts(self, connect, send, read)
    ngx.log(ngx.WARN, "resty shim: set_timeouts(", connect, ", ", send, ", ", read, ")")
    local sock = rawget(self, "_sock")
    sock:settimeouts(connect, send, read)
end

local mt = { __index = methods }

function _M.new(self)
    local red, err = base.new(self)
    if not red then
        return nil, err
    end
    return setmetatable(red, mt)
end

return _M
