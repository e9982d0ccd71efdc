// The compiler emits only JavaScript; the HTML templates and static files travel beside it.
import { cpSync, chmodSync } from 'node:fs';

for (const dir of ['http/views', 'http/assets']) {
  cpSync(`src/${dir}`, `dist/${dir}`, { recursive: true });
}
chmodSync('dist/cli/main.js', 0o755);
