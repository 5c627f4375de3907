# Sourced by the bench scripts (set `port` first): one server at a time.
# Sets data (Multi30k: $POLYCLIP_DATA or ../shared/data/multi30k), bin and url; `serve YAML`
# starts a polyclip server from those config lines on a fresh store and waits until it is
# ready; `wait_up PATH` waits for any server started as `... & pid=$!`; `stop` ends it.
data=${POLYCLIP_DATA:-../shared/data/multi30k}
bin=.venv/bin
url=http://127.0.0.1:$port

wait_up() {
  for _ in $(seq 1 300); do curl -sf "$url$1" >/dev/null && return 0; sleep 1; done
  echo "server on $port did not come up" >&2; return 1
}
serve() {
  local cfg
  cfg=$(mktemp --suffix=.yaml)
  printf '%s\ndata_dir: %s\n' "$1" "$(mktemp -d)" > "$cfg"
  $bin/polyclip serve --config "$cfg" --port "$port" --log-level warning & pid=$!
  wait_up /ready
}
stop() { kill "${pid:-}" 2>/dev/null || true; wait "${pid:-}" 2>/dev/null || true; }
