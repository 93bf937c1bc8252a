// Builds plotly.js with only the trace types the app draws, with plotly.js's own esbuild settings
// (its esbuild-config.js: the same plugins, aliases and defines, minified like its dist files).
// Usage: node build.cjs OUT.min.js TRACE[,TRACE...]   (run by scripts/build_plotly_bundle.sh)
'use strict';
const fs = require('fs');
const path = require('path');
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const { glsl } = require('esbuild-plugin-glsl');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');

const [out, traceList] = process.argv.slice(2);
if (!out || !traceList) {
  console.error('usage: node build.cjs OUT.min.js TRACE[,TRACE...]');
  process.exit(2);
}
const lib = path.dirname(require.resolve('plotly.js/lib/core.js'));
const traces = traceList.split(',').filter((t) => t !== 'scatter'); // scatter is part of plotly's core
for (const t of traces) {
  if (!fs.existsSync(path.join(lib, t + '.js'))) {
    console.error('plotly.js has no trace type ' + JSON.stringify(t));
    process.exit(2);
  }
}
const entry = path.join(__dirname, 'entry.generated.js');
fs.writeFileSync(
  entry,
  "'use strict';\n" +
    `var Plotly = require(${JSON.stringify(path.join(lib, 'core.js'))});\n` +
    `Plotly.register([${traces.map((t) => `require(${JSON.stringify(path.join(lib, t + '.js'))})`).join(', ')}]);\n` +
    'module.exports = Plotly;\n'
);
esbuild
  .build({
    entryPoints: [entry],
    outfile: out,
    format: 'iife',
    globalName: 'Plotly',
    bundle: true,
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    banner: {
      js: `/* plotly.js v${require('plotly.js/package.json').version} (MIT license, https://github.com/plotly/plotly.js), ` +
        `trace types ${traceList}: built by Feature Bridge's scripts/build_plotly_bundle.sh */`,
    },
    plugins: [InlineCSSPlugin(), glsl({ minify: true }), environmentPlugin({ NODE_DEBUG: false })],
    alias: { regl: '@plotly/regl', stream: 'stream-browserify' },
    define: { global: 'window', 'define.amd': 'false' },
    target: 'es2016',
    logLevel: 'warning',
  })
  .then(() => fs.unlinkSync(entry))
  .catch(() => process.exit(1));
