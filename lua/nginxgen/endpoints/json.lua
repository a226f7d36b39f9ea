-- One cjson instance for the endpoint feed, configured for untrusted input: no NaN or
-- Infinity, shallow nesting, 14 significant digits (all cjson 2.1.0 can print).
-- OpenResty bundles cjson; on Debian it is the lua-cjson package (found through the
-- default lua_package_cpath, /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so).

local cjson = require("cjson.safe").new()

cjson.decode_max_depth(16)
cjson.decode_invalid_numbers(false)
cjson.encode_invalid_numbers(false)
cjson.encode_number_precision(14)
cjson.encode_sparse_array(false)

return cjson
