# Sourced by the bench scripts (set `port` first): one polyclip server at a time.
# Sets data (Multi30k: $POLYCLIP_DATA or ../shared/data/multi30k), bin and url; `serve YAML`
# starts a server from those config lines on a fresh store and waits until it is ready;
# `stop` ends it.
data=${POLYCLIP_DATA:-../shared/data/multi30k}
bin=.venv/bin
url=http://127.0.0.1:$port

serve() {
  local cfg
  cfg=$(mktemp --suffix=.yaml)
  printf '%s\ndata_dir: %s\n' "$1" "$(mktemp -d)" > "$cfg"
  $bin/polyclip serve --config "$cfg" --port "$port" --log-level warning & pid=$!
  for _ in $(seq 1 300); do curl -sf "$url/ready" >/dev/null && return 0; sleep 1; done
  echo "server on $port did not come up" >&2; return 1
}
stop() { kill "${pid:-}" 2>/dev/null || true; wait "${pid:-}" 2>/dev/null || true; }
