#!/usr/bin/env bash
# Copy the JavaScript the built book needs (MathJax, RequireJS, the ipywidgets HTML manager) from the npm registry
# into book/static/offline/, so pages render math and saved widget views with no CDN (the default Jupyter Book pages
# load them from CDNs, which leaves math raw and widgets blank offline). Idempotent; not committed (see .gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/static/offline
stamp=$dest/.versions
versions="mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.4"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$versions" ]; then exit 0; fi
command -v npm >/dev/null || { echo "vendor_assets: npm is needed to fetch $versions (apt-get install npm)" >&2; exit 1; }
work=.cache/npm
mkdir -p "$work"
npm install --prefix "$work" --no-audit --no-fund --silent $versions
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/html-manager"
cp -r "$work/node_modules/mathjax/es5" "$dest.tmp/mathjax"
rm -rf "$dest.tmp/mathjax/sre"   # speech-rule engine: large, not needed to typeset
cp "$work/node_modules/requirejs/require.js" "$dest.tmp/require.js"
find "$work/node_modules/@jupyter-widgets/html-manager/dist" -maxdepth 1 -type f ! -name '*.map' \
  -exec cp {} "$dest.tmp/html-manager/" \;
echo "$versions" > "$dest.tmp/.versions"
# The widget manager loads its icon fonts relative to the page (notebooks/@jupyter-widgets/html-manager/dist/...):
# html_extra_path copies book/extra/ to the root of the built site, so the fonts are found there.
# Two bundled modules resolve them from two folders (the manager's dist/ and the @jupyter-widgets/ scope), so both.
rm -rf book/extra
for fonts in book/extra/notebooks/@jupyter-widgets/html-manager/dist book/extra/notebooks/@jupyter-widgets; do
  mkdir -p "$fonts"
  find "$dest.tmp/html-manager" -maxdepth 1 -type f \( -name '*.woff*' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
    -exec cp {} "$fonts/" \;
done
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "vendor_assets: installed $versions into $dest"
