#!/usr/bin/env bash
# `make demo`: the whole stack on loopback with a simulated accelerator, in the foreground.
# Ctrl-C stops every process it started (honcho owns them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p .demo

export SQUIRREL_DEMO_PVS="${SQUIRREL_DEMO_PVS:-50000}"
export SQUIRREL_ANONYMOUS_ACCESS="${SQUIRREL_ANONYMOUS_ACCESS:-restore}"
export EPICS_CA_ADDR_LIST=127.0.0.1 EPICS_CA_AUTO_ADDR_LIST=NO
export EPICS_CA_SERVER_PORT="${EPICS_CA_SERVER_PORT:-5064}"
export EPICS_CA_REPEATER_PORT="${EPICS_CA_REPEATER_PORT:-5065}"
export EPICS_PVA_ADDR_LIST=127.0.0.1 EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVAS_INTF_ADDR_LIST=127.0.0.1
export EPICS_PVA_SERVER_PORT="${EPICS_PVA_SERVER_PORT:-5075}"
export EPICS_PVA_BROADCAST_PORT="${EPICS_PVA_BROADCAST_PORT:-5076}"
[ -s .demo/secret_key ] || $PY -c "import secrets; print(secrets.token_urlsafe(48))" > .demo/secret_key
export SQUIRREL_SECRET_KEY_FILE="$PWD/.demo/secret_key"

$PY manage.py migrate --noinput
$PY manage.py collectstatic --noinput -v 0

csv=".demo/sim_${SQUIRREL_DEMO_PVS}.csv"
# A fifth of the devices are catalogued as pva:// (the sim IOC serves every record over both).
$PY manage.py sim_ioc --count "$SQUIRREL_DEMO_PVS" --prefix SIM --csv-only --write-csv "$csv" \
  --pva-share 0.2
if [ "$($PY manage.py shell -c 'from pvs.models import PV; print(PV.objects.exists())')" = "True" ]; then
  echo "demo: catalog already imported, skipping import_pvs"
else
  $PY manage.py import_pvs "$csv"
fi

password_file=.demo/admin_password
[ -s "$password_file" ] || $PY -c "import secrets; print(secrets.token_urlsafe(12))" > "$password_file"
DJANGO_SUPERUSER_PASSWORD="$(cat "$password_file")" $PY manage.py shell -c "
import os
from django.contrib.auth import get_user_model
User = get_user_model()
user, _ = User.objects.get_or_create(username='demo', defaults={'is_staff': True, 'is_superuser': True})
user.is_staff = user.is_superuser = True
user.set_password(os.environ['DJANGO_SUPERUSER_PASSWORD'])
user.save()
"

cat <<MSG

  Squirrel demo: ${SQUIRREL_DEMO_PVS} simulated devices on EPICS port ${EPICS_CA_SERVER_PORT}
    API root     http://127.0.0.1:8080/
    API docs     http://127.0.0.1:8080/docs
    live values  http://127.0.0.1:8080/live/pvs
    admin        http://127.0.0.1:8080/admin/   user: demo   password: $(cat "$password_file")
  Celery beat runs snapshot schedules (admin: Snapshot schedules; API: /v1/snapshot-schedules).
  Ctrl-C stops everything.

MSG
exec .venv/bin/honcho -f Procfile.demo start
