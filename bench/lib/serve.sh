# Sourced by the benchmarks that need an image server: publishes a rootfs
# tarball with `davit publish` and a throwaway GnuPG key, makes a throwaway
# CA and a certificate for 127.0.0.1, and serves the tree with `davit serve`
# over HTTPS on 127.0.0.1 (LXC's download template speaks https only).
#
#   bench_serve DAVIT TARBALL WORK
#
# Needs GNUPGHOME set (an empty or missing directory of the caller's). Sets
# `url` (https://127.0.0.1:PORT), `hostport`, and leaves in WORK: key.asc,
# ca.pem, wgetrc (for wget and lxc-create: WGETRC=WORK/wgetrc), access.log,
# serve.pid (the caller kills it), tree/.
# shellcheck shell=bash
bench_serve() {
  local davit=$1 tarball=$2 work=$3 fpr
  echo "bench: publishing $tarball (xz, takes a minute or two)" >&2
  mkdir -p -m 700 "$GNUPGHOME"
  gpg --batch --quiet --passphrase '' --quick-gen-key "davit bench <bench@davit.invalid>" ed25519 sign never 2>/dev/null
  fpr=$(gpg --list-secret-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
  gpg --export --armor "$fpr" >"$work/key.asc"
  "$davit" publish "$tarball" -q --dist debian --release bookworm --arch amd64 \
    --to "$work/tree" --key "$fpr" --gnupg-home "$GNUPGHOME"
  gpgconf --kill all >/dev/null 2>&1 || true

  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=davit bench CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$work/srv.key" -out "$work/srv.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/srv.ext"
  openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/srv.ext" -out "$work/srv.pem" 2>/dev/null
  printf 'ca_certificate = %s\n' "$work/ca.pem" >"$work/wgetrc"

  "$davit" serve "$work/tree" --listen 127.0.0.1:0 --tls-cert "$work/srv.pem" --tls-key "$work/srv.key" \
    --access-log "$work/access.log" >"$work/serve.out" 2>"$work/serve.err" &
  echo $! >"$work/serve.pid"
  for _ in $(seq 100); do grep -q serving "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
  url=$(awk '/serving/ {print $NF}' "$work/serve.out")
  case "$url" in
    https://127.0.0.1:*) ;;
    *) echo "bench: davit serve did not start: $(cat "$work/serve.err")" >&2; return 1 ;;
  esac
  hostport=${url#https://}
  echo "bench: serving on $url" >&2
}
