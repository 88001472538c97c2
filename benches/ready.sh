# Sourced by the benchmark scripts: `ready ADMIN_ADDRESS [TRIES]` waits
# (0.1 s a try, 600 tries by default) until the node's /readyz answers 200
# and no filter is still loading (filters not in the compile cache load
# after the node listens). Fails when it never does.
ready() {
  local body
  for _ in $(seq "${2:-600}"); do
    if body="$(curl -sf "http://$1/readyz")" && ! grep -q filters_loading <<<"$body"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the node at $1 never got ready" >&2
  return 1
}
