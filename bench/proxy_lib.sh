#!/bin/bash
# Shared by bench/proxy.sh and bench/proxy_callgrind.sh (sourced, not run).

# write_meshscope_confs OFF_FILE ON_FILE: the proxy under test in front of the upstream on $P_UP, listening
# on $P_MS (admin $P_MS_ADMIN), with span export off, and on to the sink on $P_SINK with a queue deep
# enough that no span is dropped at full load (the runs measure full export).
write_meshscope_confs() {
  local conf="[service]
name = \"bench\"

[[outbound]]
listen = \"127.0.0.1:$P_MS\"
route = [{ name = \"all\", upstream = \"up\" }]

[[upstream]]
name = \"up\"
protocol = \"http1\"
endpoints = [{ address = \"127.0.0.1:$P_UP\" }]

[admin]
listen = \"127.0.0.1:$P_MS_ADMIN\"
"
  printf '%s' "$conf" > "$1"
  printf '%s\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nqueue_size = 65536\nbatch_size = 2048\n' \
    "$conf" "$P_SINK" > "$2"
}
