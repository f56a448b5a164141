#!/usr/bin/env bash
# Runs one fuzz target (or all) with seeds from the fixtures.
#   bash fuzz/run.sh TARGET [libFuzzer flags…]      e.g. -runs=10000000 or -max_total_time=30
#   bash fuzz/run.sh all -max_total_time=30
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus grows in
# fuzz/corpus/TARGET (not committed); a crash is written to fuzz/artifacts/TARGET and must
# become a regression test beside the code it broke.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")"
targets=(checkin_decode report_decode plist_limits mdm_signature apns_response push_certificate scep_message)
target=${1:?target name or "all"}; shift
if [ "$target" = all ]; then
  for t in "${targets[@]}"; do bash "$self" "$t" "$@"; done
  exit 0
fi
seeds="seeds/$target"
rm -rf "$seeds"; mkdir -p "$seeds" "corpus/$target"
F=../fixtures
case "$target" in
  checkin_decode|report_decode|plist_limits) cp "$F"/plists/*.plist "$F"/mdm-signature/body.plist "$seeds"/ ;;
  mdm_signature)
    for f in "$F"/mdm-signature/*.der; do
      { printf '\x80'; cat "$f" "$F/mdm-signature/body.plist"; } > "$seeds/$(basename "$f")"
      base64 -w0 "$f" > "$seeds/$(basename "$f").b64"
    done ;;
  apns_response)
    printf '\x00\xc8' > "$seeds/200"
    printf '\x01\x9a{"reason":"Unregistered","timestamp":1700000000000}' > "$seeds/410"
    printf '\x01\x93{"reason":"BadCertificate"}' > "$seeds/403"
    printf '\x01\x90{"reason":"BadDeviceToken"}' > "$seeds/400" ;;
  push_certificate) cp "$F"/certs/push*.pem "$F"/certs/*.p12 "$seeds"/ ;;
  scep_message) cp ../checkin/scep/tests/data/*.der "$seeds"/ ;;
  *) echo "unknown target $target (one of: ${targets[*]})" >&2; exit 2 ;;
esac
cargo +nightly fuzz run -O "$target" "corpus/$target" "$seeds" -- "$@"
