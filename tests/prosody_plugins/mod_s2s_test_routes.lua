-- Test-only (tests/peerproc.py): outgoing s2s to the domains in
-- `s2s_test_routes` goes to a fixed address and port instead of their DNS
-- SRV and A records, so that a test's Prosody reaches vinespy.test on
-- 127.0.0.1:<free port> without /etc/hosts or a DNS server.
--
--   s2s_test_routes = { ["vinespy.test"] = { "127.0.0.1", 40123 } }
--
-- mod_s2s (0.12) builds each outgoing connection's resolver with
-- require("net.resolvers.service").new(to_host, "xmpp-server", ...) at
-- connection time, chained after an "xmpps-server" one (direct TLS, when a
-- TLS context exists). Wrapping that constructor is the narrowest seam: the
-- session, its certificate checks (against to_host, not the address), dialback
-- and SASL EXTERNAL stay mod_s2s's own. A routed domain has no direct-TLS
-- service, as a domain without _xmpps-server SRV records.
module:set_global();

local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local manual = require "net.resolvers.manual";

local routes = module:get_option("s2s_test_routes", {});
local original_new = service.new;

function service.new(hostname, srv_name, conn_type, extra)
	local route = routes[hostname];
	if not route then
		return original_new(hostname, srv_name, conn_type, extra);
	end
	if srv_name ~= "xmpp-server" then
		return manual.new({}, conn_type, extra);
	end
	module:log("info", "s2s_test_routes: %s -> %s port %d", hostname, route[1], route[2]);
	return basic.new(route[1], route[2], conn_type or "tcp", extra);
end

function module.unload()
	service.new = original_new;
end
