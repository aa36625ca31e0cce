#!/bin/sh
# Prepare every folder of the three-agency federation in deploy/compose.yaml, on one
# machine, for a trial. In a real federation each step below runs on a different host:
# each organisation runs its own `org init` and `org install`, each custodian their own
# `custodian init` and `custodian sign`, the federation authority the `authority`
# commands, and only public files travel between them (admission.request, root.pub,
# draft.registry, bundles). docs/operations.md walks through the same steps one host at
# a time.
#
# Usage:  sh deploy/prepare-orgs.sh [OUT]          (OUT defaults to ./fedscore-orgs)
# Needs:  `fedscore` on PATH, e.g. PATH="$PWD/.venv/bin:$PATH"
#
# OUT is laid out as a local federation folder (fedscore.runtime.org_paths):
#   OUT/orgs/<id>/          one folder per organisation (the servers' go into volumes)
#   OUT/custodians/<name>/  one folder per root custodian (offline in real life)
#   OUT/authority/          the federation authority (CA, registry versions, draft)
#   OUT/requests/ OUT/bundles/ OUT/policy.*   the public files that travel
# Every folder gets its own random passphrase file; FEDSCORE_PASSPHRASE is unset here so
# that no two organisations share one.
set -eu

OUT=${1:-./fedscore-orgs}
FEDERATION_ID=${FEDSCORE_FEDERATION_ID:-fedscore-compose}
PORT=7000
# policies/defaults.py DEFAULT_AGENCIES, first three: the default policy cut to three
# agencies asks exactly these.
AGENCIES="trc dsd chuangpao"
# Start order: the consent registry, the agencies, the helper aggregator (the regulator's
# organisation runs it: docs/adr/0019), the coordinator.
SERVERS="consent-registry $AGENCIES regulator-helper coordinator"
CLIENTS="ptt citizen-portal regulator policy-authority"
CUSTODIANS="custodian-1 custodian-2 custodian-3"

say() { printf 'prepare-orgs: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

command -v fedscore >/dev/null 2>&1 \
    || die "fedscore is not on PATH (try: PATH=\"\$PWD/.venv/bin:\$PATH\" sh $0)"
# The Python that runs fedscore, to write the default policy document.
PYTHON=${PYTHON:-$(dirname "$(command -v fedscore)")/python}
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -c 'import policies.defaults' 2>/dev/null \
    || die "$PYTHON cannot import fedscore's packages; set PYTHON to the one that can"
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    die "$OUT is not empty; choose a new folder"
fi
unset FEDSCORE_PASSPHRASE

ORGS="$OUT/orgs"
AUTH="$OUT/authority"
CUST="$OUT/custodians"
mkdir -p "$ORGS" "$CUST" "$OUT/requests" "$OUT/bundles"

# Every other server, as --fetch-registry-from options: each server follows the
# registry chain from its peers (GetTrust every trust_refresh_seconds).
peers() {
    for peer in $SERVERS; do
        [ "$peer" = "$1" ] || printf ' --fetch-registry-from %s:%s' "$peer" "$PORT"
    done
}

display_name() {
    case $1 in
        consent-registry) echo "Consent registry" ;;
        coordinator) echo "Coordinator" ;;
        trc) echo "Thai Red Cross Society" ;;
        dsd) echo "Department of Skill Development, Ministry of Labour" ;;
        chuangpao) echo "Chuang Pao Subdistrict Administrative Organisation" ;;
        ptt) echo "PTT Public Company Limited (fuel discount partner)" ;;
        citizen-portal) echo "Citizen portal (the citizen's own app)" ;;
        regulator) echo "Personal Data Protection Committee (regulator)" ;;
        policy-authority) echo "National committee (policy authority)" ;;
        regulator-helper) echo "Personal Data Protection Committee (helper aggregator for statistics)" ;;
        *) echo "$1" ;;
    esac
}

role_of() {
    case $1 in
        consent-registry | coordinator | citizen-portal | regulator | policy-authority) echo "$1" ;;
        ptt) echo relying-party ;;
        regulator-helper) echo helper-aggregator ;;
        *) echo agency ;;
    esac
}

# 1. Each organisation, on its own host: keys, config, admission request.
#    Servers listen on every interface of their container and are dialled by service
#    name; the authority puts that host name into their certificates.
for id in $SERVERS; do
    say "org init $id"
    # shellcheck disable=SC2046  # peers() yields separate words on purpose
    fedscore org init "$ORGS/$id" --id "$id" --role "$(role_of "$id")" \
        --name "$(display_name "$id")" --endpoint "$id:$PORT" --listen "0.0.0.0:$PORT" \
        $(peers "$id")
done
for id in $CLIENTS; do
    say "org init $id (client only)"
    # shellcheck disable=SC2046
    fedscore org init "$ORGS/$id" --id "$id" --role "$(role_of "$id")" \
        --name "$(display_name "$id")" $(peers "")
done
for id in $SERVERS $CLIENTS; do
    cp "$ORGS/$id/admission.request" "$OUT/requests/$id.request"
done

# 2. Three root custodians, each with a key of their own; the authority learns only
#    their public keys.
for name in $CUSTODIANS; do
    say "custodian init $name"
    fedscore custodian init "$CUST/$name" --name "$name"
done

# 3. The federation authority: its CA, and a root of 2 of the 3 custodians' keys.
say "authority init $FEDERATION_ID"
fedscore authority init "$AUTH" --federation-id "$FEDERATION_ID" --threshold 2 \
    --root-key "$CUST/custodian-1/root.pub" \
    --root-key "$CUST/custodian-2/root.pub" \
    --root-key "$CUST/custodian-3/root.pub"

# 4. Admit every request into the draft of version 1. A relying party's sector decides
#    which purposes may name it (docs/adr/0012-relying-party-sectors.md).
for id in $SERVERS $CLIENTS; do
    case $id in
        ptt)
            say "authority admit $id (commercial)"
            fedscore authority admit "$AUTH" "$OUT/requests/$id.request" --sector commercial
            ;;
        citizen-portal)
            say "authority admit $id (citizen agent)"
            fedscore authority admit "$AUTH" "$OUT/requests/$id.request" --sector citizen-agent
            ;;
        *)
            say "authority admit $id"
            fedscore authority admit "$AUTH" "$OUT/requests/$id.request"
            ;;
    esac
done

# 5. Two of the three custodians sign the draft (the threshold); each on their own.
say "custodian sign (custodian-1, custodian-2)"
fedscore custodian sign "$CUST/custodian-1" "$AUTH/draft.registry"
fedscore custodian sign "$CUST/custodian-2" "$AUTH/draft.registry"

# 6. The policy authority signs the default policy cut to these three agencies.
say "policy sign"
"$PYTHON" - "$OUT/policy.json" <<'EOF'
import sys
from pathlib import Path

from policies.defaults import default_policy_document
from policies.loader import canonical_json

Path(sys.argv[1]).write_text(canonical_json(default_policy_document(3)) + "\n", "utf-8")
EOF
fedscore policy sign "$ORGS/policy-authority" "$OUT/policy.json" --out "$OUT/policy.signed"

# 7. Publish version 1 with the policy. No server runs yet, so it is offered to no one
#    (--no-offer): the bundles carry it.
say "authority publish"
fedscore authority publish "$AUTH" --policy "$OUT/policy.signed" --no-offer

# 8. A bundle per organisation (nothing secret in it), installed into its folder after
#    the chain in it verifies.
for id in $SERVERS $CLIENTS; do
    say "authority bundle / org install $id"
    fedscore authority bundle "$AUTH" --id "$id" --out "$OUT/bundles/$id.bundle"
    fedscore org install "$ORGS/$id" "$OUT/bundles/$id.bundle"
done

say "done: $OUT"
for id in $SERVERS; do
    say "copy into the volume of service $id: $ORGS/$id"
done
