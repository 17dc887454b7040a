#!/bin/sh
# The stack's first step (the one-shot `preflight` service; every other service waits for it to succeed):
# refuse to start with a weak secret. Compose's `${VAR:?}` only catches an empty one, and the values
# .env.example ships (change-me-...) would otherwise open the stack to anyone who has read that file.
#
# Each secret must be at least MIN_LENGTH (16) characters, hold at least 6 different characters, contain
# no placeholder word (change-me and its spellings, placeholder, example, password, secret: what a copy of
# .env.example or a made-up value holds, never `openssl rand -hex 32`) and differ from every other secret
# (a reviewer's token that is also the operator's opens the operator's routes). The ClickHouse passwords
# and the web tokens go into URLs (DSNs, the review page's ?token=), so they are letters, digits and
# - _ . ~ only. Every problem is reported, naming its variable but never its value; then exit 1.
#
# POSIX sh (the image's busybox sh); tests/test_deploy.py runs it with bash, dash and busybox too.
# Run it by hand: `docker compose run --rm preflight`.

set -f  # no pathname expansion: values are split on newlines below, never globbed
LC_ALL=C
export LC_ALL

MIN_LENGTH=16
MIN_DISTINCT=6
PLACEHOLDERS="change-me changeme change_me replace-me replaceme placeholder example password secret"

problems=0
checked=0
values=""   # "NAME=value" lines of the secrets checked so far, to compare each new one with

fail() {
    echo "preflight: $1" >&2
    problems=$((problems + 1))
}

distinct_characters() {
    rest=$1
    seen=""
    count=0
    while [ -n "$rest" ]; do
        char=${rest%"${rest#?}"}
        rest=${rest#?}
        case $seen in
            *"$char"*) ;;
            *) seen=$seen$char; count=$((count + 1)) ;;
        esac
    done
    echo "$count"
}

# check NAME required|optional url-safe|any
check() {
    name=$1
    eval "value=\${$name-}"
    if [ -z "$value" ]; then
        [ "$2" = optional ] || fail "$name is empty: set it in .env (e.g. \`openssl rand -hex 32\`)"
        return
    fi
    checked=$((checked + 1))
    length=${#value}
    if [ "$length" -lt "$MIN_LENGTH" ]; then
        fail "$name is too short ($length characters; at least $MIN_LENGTH)"
    fi
    lower=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
    for word in $PLACEHOLDERS; do
        case $lower in
            *"$word"*) fail "$name contains the placeholder '$word': replace it with a random value"; break ;;
        esac
    done
    if [ "$(distinct_characters "$value")" -lt "$MIN_DISTINCT" ]; then
        fail "$name has fewer than $MIN_DISTINCT different characters"
    fi
    if [ "$3" = url-safe ]; then
        case $value in
            *[!A-Za-z0-9._~-]*) fail "$name may hold only letters, digits and - _ . ~ (it goes into a URL)" ;;
        esac
    fi
    old_ifs=$IFS
    IFS='
'
    for pair in $values; do
        if [ "${pair#*=}" = "$value" ]; then
            fail "$name is the same as ${pair%%=*}: every secret must be its own"
        fi
    done
    IFS=$old_ifs
    values="$values
$name=$value"
}

# identifier NAME DEFAULT: a ClickHouse user or database name, spliced into SQL by the init script
identifier() {
    eval "value=\${$1:-$2}"
    case $value in
        "" | [0-9]* | *[!A-Za-z0-9_]*) fail "$1 must be a plain name (letters, digits, _; not starting with a digit)" ;;
    esac
}

check EMOSTREAM_WEB_TOKEN required url-safe
check EMOSTREAM_REVIEW_TOKEN optional url-safe
check CLICKHOUSE_PASSWORD required url-safe
check CLICKHOUSE_READER_PASSWORD required url-safe
check CLICKHOUSE_ADMIN_PASSWORD required url-safe
check GRAFANA_ADMIN_PASSWORD required any

identifier CLICKHOUSE_USER emostream
identifier CLICKHOUSE_DB emostream
case ${CLICKHOUSE_USER:-emostream} in
    default | emostream_reader | emostream_admin)
        fail "CLICKHOUSE_USER must not be ${CLICKHOUSE_USER}: that name is another ClickHouse user of the stack" ;;
esac

if [ "$problems" -gt 0 ]; then
    echo "preflight: $problems problem(s) in .env; the stack does not start until they are fixed" >&2
    exit 1
fi
echo "preflight: $checked secrets checked (at least $MIN_LENGTH characters, no placeholder, each its own)"
