# shellcheck shell=bash
# The stack's ClickHouse users, made by the clickhouse image's entrypoint: docker-compose.yml mounts this
# file into /docker-entrypoint-initdb.d/, and the entrypoint sources it (it is not executable) while a
# first server listens on 127.0.0.1 only, before the real one starts. CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS
# makes that happen at every start, not only on an empty volume: an upgraded stack gets its users too, and
# a password changed in .env takes effect at the next start. Each user is dropped and made anew, so what
# it may do is exactly what is written here and in ../access/, whatever an earlier start left.
#
# It logs in as the administrator (CLICKHOUSE_USER/CLICKHOUSE_PASSWORD of the container: emostream_admin,
# ../server/users.xml) and makes:
# - the writer (CLICKHOUSE_WRITER_USER, the worker's EMOSTREAM_CLICKHOUSE_DSN): on its database only, read,
#   insert, and the DDL that emostream applies at every start (CREATE TABLE / VIEW / MATERIALIZED VIEW ...
#   IF NOT EXISTS, ALTER TABLE migrations); no DROP, no access management, no SYSTEM, no other database,
#   no FILE/URL/REMOTE or other sources;
# - the reader emostream_reader (user SQL, the trends page, Grafana) from ../access/emostream_reader.sql
#   as it is, with its password from CLICKHOUSE_READER_PASSWORD instead of 'change-me' and the database
#   CLICKHOUSE_DB instead of emostream.
# Names and passwords are spliced into SQL, so anything but plain names and URL-safe passwords is refused
# here too (deploy/preflight.sh refuses them before the stack starts). A failure stops the entrypoint
# (it runs with set -e), so ClickHouse does not start and nothing that depends on it does.

set -eo pipefail

emostream_users() {
    local db=${CLICKHOUSE_DB:-emostream}
    local writer=${CLICKHOUSE_WRITER_USER:-emostream}
    local writer_password=${CLICKHOUSE_WRITER_PASSWORD:-}
    local reader_password=${CLICKHOUSE_READER_PASSWORD:-}
    local access=${CLICKHOUSE_ACCESS_SQL_DIR:-/etc/emostream/access}
    local name value
    for name in db writer; do
        value=${!name}
        if [[ ! $value =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo "emostream-users.sh: ${name} name '${value}' is not a plain name" >&2
            return 1
        fi
    done
    case $writer in
        default | emostream_reader | emostream_admin)
            echo "emostream-users.sh: the writer may not be called ${writer}" >&2
            return 1 ;;
    esac
    for name in CLICKHOUSE_WRITER_PASSWORD CLICKHOUSE_READER_PASSWORD; do
        value=${!name:-}
        if [[ ! $value =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
            echo "emostream-users.sh: ${name} must be at least 16 letters, digits, - _ . ~" >&2
            return 1
        fi
    done
    if [[ $writer_password == "$reader_password" ]]; then
        echo "emostream-users.sh: the writer and the reader must not share a password" >&2
        return 1
    fi
    [[ -f $access/emostream_reader.sql ]] || { echo "emostream-users.sh: no $access/emostream_reader.sql" >&2; return 1; }

    echo "emostream-users.sh: writer '${writer}' and reader 'emostream_reader' on database '${db}'"
    {
        cat <<SQL
DROP USER IF EXISTS \`${writer}\`;
CREATE USER \`${writer}\` IDENTIFIED WITH sha256_password BY '${writer_password}' DEFAULT DATABASE \`${db}\`;
GRANT SELECT, INSERT, ALTER TABLE, ALTER VIEW, CREATE TABLE, CREATE VIEW ON \`${db}\`.* TO \`${writer}\`;
DROP USER IF EXISTS emostream_reader;
DROP QUOTA IF EXISTS emostream_reader_quota;
DROP SETTINGS PROFILE IF EXISTS emostream_reader_profile;
SQL
        sed -e "s/'change-me'/'${reader_password}'/" -e "/^GRANT /s/ ON emostream\\./ ON ${db}./" \
            "$access/emostream_reader.sql"
    } | clickhouse-client --host 127.0.0.1 --user "${CLICKHOUSE_USER}" --password "${CLICKHOUSE_PASSWORD}" --multiquery
}

emostream_users
unset -f emostream_users
