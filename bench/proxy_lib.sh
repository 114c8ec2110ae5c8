#!/bin/bash
# Shared by bench/proxy.sh, bench/proxy_callgrind.sh and bench/proxy_span_cost.sh (sourced, not run,
# once the script has set $WORK and the PIDS array; the script sets the traps).

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# cleanup: stops what the script started (the processes in PIDS, and every daemon or proxy whose pid
# file is in $WORK), then removes $WORK unless KEEP is set.
cleanup() {
  local p f
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for f in "$WORK"/*.pid; do [ -s "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
  return 0
}

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

# write_upstream_conf FILE [H2_PORT]: one nginx worker on $P_UP (and h2c with prior knowledge on
# H2_PORT if given) answering "ok\n" to everything, with its pid, log and temp files in $WORK.
write_upstream_conf() {
  cat > "$1" <<EOF
worker_processes 1;
events { worker_connections 1024; }
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
http {
    access_log off;
    client_body_temp_path $WORK/tmp-body; proxy_temp_path $WORK/tmp-proxy; fastcgi_temp_path $WORK/tmp-fcgi;
    uwsgi_temp_path $WORK/tmp-uwsgi; scgi_temp_path $WORK/tmp-scgi;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$P_UP;
        ${2:+listen 127.0.0.1:$2 http2;}
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
}

# wait_port PORT: returns once something accepts on 127.0.0.1:PORT, dies after 20 s.
wait_port() { local i; for i in $(seq 1 400); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; die "nothing listens on :$1"; }

# cpu_ticks PID: user + system clock ticks used so far by PID and its children (a daemon's workers).
cpu_ticks() { local t=0 p; for p in $1 $(pgrep -P "$1"); do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }

# write_haproxy_conf FILE PORT [GLOBAL_LINE] [H2_PORT]: HAProxy for the proxy benchmarks (one thread,
# keep-alive on both sides, `http-reuse always`, no log), HTTP/1.1 on PORT (and h2c on H2_PORT if
# given) in front of the upstream on $P_UP, with its pid in $WORK/haproxy.pid and GLOBAL_LINE (e.g.
# `busy-polling`) added to `global`.
write_haproxy_conf() {
  cat > "$1" <<EOF
global
    nbthread 1
    maxconn 8000
    pidfile $WORK/haproxy.pid
    ${3:-}
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
frontend h1
    bind 127.0.0.1:$2
    ${4:+bind 127.0.0.1:$4 proto h2}
    default_backend up
backend up
    server up1 127.0.0.1:$P_UP maxconn 1000
EOF
}

# write_busy_conf FROM TO: the proxy configuration FROM with `busy_poll = true` in its [service].
write_busy_conf() {
  sed 's/^\[service\]$/[service]\nbusy_poll = true/' "$1" > "$2"
  grep -q '^busy_poll = true$' "$2" || die "no [service] table in $1 to add busy_poll to"
}
