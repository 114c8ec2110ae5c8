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

# write_nginx_proxy_conf FILE PORT [H2_PORT]: nginx as a proxy for the benchmarks (one worker, a
# keep-alive pool to the upstream on $P_UP, no access log), HTTP/1.1 on PORT (and h2c on H2_PORT if
# given), with its pid in $WORK/nginx-proxy.pid.
write_nginx_proxy_conf() {
  cat > "$1" <<EOF
worker_processes 1;
events { worker_connections 8192; }
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err warn;
http {
    access_log off;
    client_body_temp_path $WORK/tmp-body; proxy_temp_path $WORK/tmp-proxy; fastcgi_temp_path $WORK/tmp-fcgi;
    uwsgi_temp_path $WORK/tmp-uwsgi; scgi_temp_path $WORK/tmp-scgi;
    keepalive_requests 10000000; keepalive_timeout 300s;
    upstream backend { server 127.0.0.1:$P_UP; keepalive 256; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        ${3:+listen 127.0.0.1:$3 http2;}
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
}

# build_proxy_and EXAMPLE...: unless NOBUILD is set, builds the release proxy binary and EXAMPLEs.
build_proxy_and() {
  [ -n "${NOBUILD:-}" ] && return
  local examples=() e
  for e in "$@"; do examples+=(--example "$e"); done
  log "cargo build --release -p meshscope-proxy --bin meshscope-proxy ${examples[*]}"
  (cd "$ROOT" && cargo build --release -p meshscope-proxy --bin meshscope-proxy "${examples[@]}") >&2 || die "build failed"
}

# Starting and stopping one contender at a time on CPU $PROXY_CPU, listening on $P_MS (the scripts
# that measure each proxy alone). Each start sets SUT_PID, the process whose CPU is measured.
#
# start_meshscope NAME: the proxy $PROXY on $WORK/NAME.toml with one worker.
start_meshscope() {
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c $PROXY_CPU "$PROXY" --config "$WORK/$1.toml" 2>>"$WORK/$1.log" &
  SUT_PID=$!; PIDS+=($SUT_PID); DAEMON_PIDFILE=
  wait_port $P_MS
}
# start_daemon PIDFILE COMMAND...: a proxy that daemonises (HAProxy -D, nginx); SUT_PID is its worker
# process, or the daemon itself when it has none.
start_daemon() {
  local pidfile=$1; shift
  taskset -c $PROXY_CPU "$@" || die "$1 did not start"
  wait_port $P_MS
  DAEMON_PIDFILE=$pidfile
  local daemon; daemon=$(cat "$pidfile")
  SUT_PID=$(pgrep -P "$daemon" | head -1); [ -n "$SUT_PID" ] || SUT_PID=$daemon
}
# stop_contender: stops the contender started last and waits until it is gone.
stop_contender() {
  if [ -n "${DAEMON_PIDFILE:-}" ]; then
    local daemon; daemon=$(cat "$DAEMON_PIDFILE")
    kill -TERM "$daemon"
    while kill -0 "$daemon" 2>/dev/null; do sleep 0.1; done
    rm -f "$DAEMON_PIDFILE"; DAEMON_PIDFILE=
  else
    kill -TERM "$SUT_PID"; wait "$SUT_PID" 2>/dev/null
  fi
}
