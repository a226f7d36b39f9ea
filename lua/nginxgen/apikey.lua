-- API key digests for nginxgen's `auth: {api_keys: ...}` routes.
--
-- The rendered config holds only sha256 digests of the accepted keys (in a `map`); this
-- module turns the key a client presents into the same digest. OpenResty ships
-- resty.sha256; Debian's lua-nginx module does not, so fall back to OpenSSL's one-shot
-- SHA256() through the FFI (nginx is linked against libcrypto either way).

local _M = {}

local ffi = require("ffi")
local string_format = string.format
local string_byte = string.byte
local table_concat = table.concat

local digest_bin

local ok_resty, resty_sha256 = pcall(require, "resty.sha256")
if ok_resty and resty_sha256 then
    digest_bin = function(data)
        local h = resty_sha256:new()
        h:update(data)
        return h:final()
    end
else
    -- pcall: another module may have declared the same prototype already.
    pcall(ffi.cdef, "unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);")
    local out = ffi.new("unsigned char[32]")
    local C = ffi.C
    digest_bin = function(data)
        C.SHA256(data, #data, out)
        return ffi.string(out, 32)
    end
end

local function to_hex(bin)
    local parts = {}
    for i = 1, #bin do
        parts[i] = string_format("%02x", string_byte(bin, i))
    end
    return table_concat(parts)
end

-- sha256 hex of the presented key; "" when none was sent, so the map answers 0.
function _M.digest(key)
    if type(key) == "table" then
        return "" -- the header was sent twice: ambiguous, refuse
    end
    if key == nil or key == "" then
        return ""
    end
    return to_hex(digest_bin(key))
end

return _M
