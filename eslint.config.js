// ESLint 9 flat config: eslint's and typescript-eslint's recommended rules (no type-aware rules).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

const readonly = (names) => Object.fromEntries(names.map((name) => [name, 'readonly']));

// Globals for the plain-JS files; TypeScript files are checked by tsc (no-undef is off there).
const nodeGlobals = readonly([
  'process', 'console', 'Buffer', 'URL', 'URLSearchParams', 'TextEncoder', 'TextDecoder', 'AbortController',
  'AbortSignal', 'performance', 'fetch', 'structuredClone', 'queueMicrotask', 'globalThis',
  'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate',
]);
const browserGlobals = readonly([
  'window', 'document', 'navigator', 'location', 'history', 'console', 'fetch', 'URL', 'URLSearchParams',
  'FormData', 'HTMLElement', 'HTMLFormElement', 'HTMLInputElement', 'Event', 'CustomEvent',
  'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'requestAnimationFrame', 'localStorage',
  'sessionStorage',
]);

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', 'data/', 'test-results/', 'coverage/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: nodeGlobals },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },
  {
    // Scripts served to the browser as they are (no bundler).
    files: ['src/http/assets/**/*.js'],
    languageOptions: { sourceType: 'script', globals: browserGlobals },
  },
);
