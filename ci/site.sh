#!/usr/bin/env bash
# CI: build the course website from the committed notebooks (tools/site.py) and check every page in headless Chromium,
# offline (tests/test_site.py + tests/site_check.js). Run it in the project's environment (`pip install -e ".[dev]"`).
#
#   bash ci/site.sh                       # the site in _site/, screenshots in _site/screenshots/
#   LORANB_SITE_OUT=/tmp/s bash ci/site.sh
#
# Installs what the check needs when it is missing: Chromium from the distribution (apt-get; skipped when
# LORANB_CHROMIUM names a browser, e.g. google-chrome on GitHub's runners) and the npm package playwright-core into
# ~/.cache/loranb-site-check (LORANB_NODE_MODULES to change it), kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
command -v node >/dev/null || { echo "ci/site.sh needs node and npm"; exit 1; }
if [ -z "${LORANB_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== installing Chromium (apt-get)"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
modules="${LORANB_NODE_MODULES:-$HOME/.cache/loranb-site-check/node_modules}"
if [ ! -d "$modules/playwright-core" ]; then
  echo "== installing playwright-core (npm) into $(dirname "$modules")"
  mkdir -p "$(dirname "$modules")"
  npm install --prefix "$(dirname "$modules")" --no-audit --no-fund --silent "playwright-core@1"
fi
export LORANB_NODE_MODULES="$modules" LORANB_SITE_CHECK=1 LORANB_SITE_OUT="${LORANB_SITE_OUT:-$PWD/_site}"
echo "== building $LORANB_SITE_OUT and checking it in $("${LORANB_CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | head -1)"
python -m pytest -q -p no:cacheprovider tests/test_site.py
echo "== site built and checked in $(( $(date +%s) - start )) s; screenshots in $LORANB_SITE_OUT/screenshots/"
