vcl 4.1;
# Varnish configured like an Edgeshield node, for bench/compare.sh.
# @ORIGIN_HOST@ and @ORIGIN_PORT@ are filled in by the script. Storage is
# malloc (-s malloc,1G on the command line); concurrent misses are coalesced
# by Varnish's waiting list, as by Edgeshield.

backend origin {
    .host = "@ORIGIN_HOST@";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
}

sub vcl_backend_response {
    # Like Edgeshield and nginx: cache only what the origin marks cacheable
    # (RFC 9111); Varnish's builtin default TTL would cache everything else
    # for 120 s and make the comparison unfair. The hit-for-miss marker
    # (uncacheable with a TTL) keeps later requests off the waiting list.
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
}

sub vcl_deliver {
    # RFC 9211 Cache-Status, as Edgeshield sends it.
    if (obj.hits > 0) {
        set resp.http.Cache-Status = "varnish; hit";
    } else {
        set resp.http.Cache-Status = "varnish; fwd=miss";
    }
    unset resp.http.Via;
    unset resp.http.X-Varnish;
}
